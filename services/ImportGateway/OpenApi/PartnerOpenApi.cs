using System.Text.Json.Nodes;
using CohortBridge.ImportGateway.Endpoints;
using CohortBridge.ImportGateway.Imports;
using Microsoft.OpenApi;

namespace CohortBridge.ImportGateway.OpenApi;

/// <summary>
/// The OpenAPI document of the partner API (<c>/openapi/v1.json</c>), with the request examples and error texts of
/// shared/API.md. The handlers read bodies with Utf8JsonReader, so request schemas come from the documentation
/// records named in <c>Accepts&lt;T&gt;</c>; examples are added here.
/// </summary>
public static class PartnerOpenApi
{
    public const string DocumentName = "v1";

    private const string NameExample = """
        {"partner_api_key": "<partner api key>", "client_secret": "<client secret>", "cohort_id": "spring-buyers",
         "name": "Spring buyers", "created_at": "2026-11-22T19:20:30+01:00"}
        """;

    private const string ChangesExample = """
        {"partner_api_key": "<partner api key>", "client_secret": "<client secret>", "cohort_id": "spring-buyers",
         "cohort_changes": [
           {"user_ids": ["user-1", "user-2"], "device_ids": null, "aliases": [{"alias_name": "crm-42", "alias_label": "crm"}]},
           {"user_ids": ["user-3"], "device_ids": ["device-9"], "aliases": [], "should_remove": true}]}
        """;

    private const string AcceptedExample = """{"message": "success", "import_id": "0a1b2c3d-0000-4000-8000-000000000001"}""";

    private const string StatusExample = """
        {"import_id": "0a1b2c3d-0000-4000-8000-000000000001", "cohort_id": "spring-buyers", "status": "completed",
         "received": 4, "matched": 3, "added": 2, "removed": 1, "unmatched": {"unknown_device_id": 1},
         "unmatched_sample": ["device-9"], "cohort_version": 7, "accepted_at": "2026-11-22T18:20:30Z",
         "completed_at": "2026-11-22T18:20:31Z", "error": null}
        """;

    public static IServiceCollection AddPartnerOpenApi(this IServiceCollection services, string? publicBaseUrl)
    {
        services.AddOpenApi(DocumentName, o =>
        {
            o.ShouldInclude = d => d.GroupName is null && d.RelativePath?.StartsWith("partners/", StringComparison.Ordinal) == true;
            o.AddDocumentTransformer((document, _, _) =>
            {
                document.Info = new OpenApiInfo
                {
                    Title = "CohortBridge partner API",
                    Version = "v1",
                    Description = "Wire-compatible with the partner cohort import API: change only the base URL. "
                                  + "Errors are {\"message\": \"...\"} with the texts below. Check order: 415, 413, 400 (not a JSON object), "
                                  + "401, 429, 400 (fields), 409 (Idempotency-Key), 503, 202.",
                };
                if (!string.IsNullOrWhiteSpace(publicBaseUrl))
                {
                    document.Servers = [new OpenApiServer { Url = publicBaseUrl }];
                }

                return Task.CompletedTask;
            });
            o.AddOperationTransformer(async (operation, context, ct) =>
            {
                var name = context.Description.ActionDescriptor.EndpointMetadata.OfType<IEndpointNameMetadata>().FirstOrDefault()?.EndpointName;

                // The handlers read the raw body (no Accepts<T> metadata, which would let routing answer 415 itself
                // without the partner-compatible message), so the request body is described here.
                var requestType = name switch
                {
                    "CreateOrRenameCohort" => typeof(CohortNameRequest),
                    "ChangeCohortUsers" => typeof(CohortChangesRequest),
                    _ => null,
                };
                if (requestType is not null)
                {
                    operation.RequestBody = new OpenApiRequestBody
                    {
                        Required = true,
                        Content = new Dictionary<string, OpenApiMediaType>
                        {
                            ["application/json"] = new() { Schema = await context.GetOrCreateSchemaAsync(requestType, null, ct) },
                        },
                    };
                }

                Describe(operation, name);
            });
        });
        return services;
    }

    private static void Describe(OpenApiOperation operation, string? name)
    {
        switch (name)
        {
            case "CreateOrRenameCohort":
                SetRequestExample(operation, "application/json", NameExample);
                SetResponseExample(operation, "202", AcceptedExample);
                SetErrors(operation, "400", PartnerMessages.CohortIdInvalid, PartnerMessages.NameInvalid,
                    PartnerMessages.CreatedAtInvalid, PartnerMessages.BodyNotObject);
                break;
            case "ChangeCohortUsers":
                SetRequestExample(operation, "application/json", ChangesExample);
                SetResponseExample(operation, "202", AcceptedExample);
                SetErrors(operation, "400", PartnerMessages.CohortIdInvalid, PartnerMessages.CohortChangesInvalid,
                    PartnerMessages.TooManyIdentifiers(1000), PartnerMessages.BodyNotObject);
                break;
            case "GetImportStatus":
                SetResponseExample(operation, "200", StatusExample);
                SetErrors(operation, "404", PartnerMessages.ImportNotFound);
                break;
            case "ArchiveCohort":
                SetResponseExample(operation, "202", AcceptedExample);
                break;
            default:
                return;
        }

        SetErrors(operation, "401", PartnerMessages.InvalidPartnerApiKey, PartnerMessages.InvalidClientSecret,
            PartnerMessages.PartnerNotEnabled("abcd"));
        SetErrors(operation, "413", PartnerMessages.BodyTooLarge(1_048_576));
        SetErrors(operation, "415", PartnerMessages.ContentTypeJson);
        SetErrors(operation, "429", PartnerMessages.RateLimited);
        SetErrors(operation, "409", PartnerMessages.IdempotencyConflict);
        SetErrors(operation, "503", PartnerMessages.Unavailable);
    }

    private static void SetRequestExample(OpenApiOperation operation, string mediaType, string json)
    {
        if (operation.RequestBody?.Content?.TryGetValue(mediaType, out var media) == true)
        {
            media.Example = JsonNode.Parse(json);
        }
    }

    private static void SetResponseExample(OpenApiOperation operation, string status, string json)
    {
        if (operation.Responses?.TryGetValue(status, out var response) == true
            && response.Content?.TryGetValue("application/json", out var media) == true)
        {
            media.Example = JsonNode.Parse(json);
        }
    }

    private static void SetErrors(OpenApiOperation operation, string status, params string[] messages)
    {
        if (operation.Responses?.TryGetValue(status, out var response) != true
            || response!.Content?.TryGetValue("application/json", out var media) != true)
        {
            return;
        }

        media!.Examples ??= new Dictionary<string, IOpenApiExample>();
        for (var i = 0; i < messages.Length; i++)
        {
            media.Examples[$"error{i + 1}"] = new OpenApiExample
            {
                Summary = messages[i],
                Value = new JsonObject { ["message"] = messages[i] },
            };
        }
    }
}
