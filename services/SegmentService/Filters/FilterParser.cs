using System.Text.Json;

namespace CohortBridge.SegmentService.Filters;

/// <summary>A filter that does not follow the API.md grammar; the message names the offending path.</summary>
public sealed class FilterFormatException(string message) : Exception(message);

/// <summary>Parses the API.md filter JSON strictly: unknown keys, empty lists and wrong types are errors.</summary>
public static class FilterParser
{
    public const int MaxDepth = 32;
    public const int MaxNodes = 1000;
    public const int MaxCohortIdLength = 255;

    public static Filter Parse(JsonElement element)
    {
        var nodes = 0;
        return ParseNode(element, "filter", 0, ref nodes);
    }

    public static Filter Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return Parse(doc.RootElement);
    }

    private static Filter ParseNode(JsonElement element, string path, int depth, ref int nodes)
    {
        if (depth > MaxDepth)
        {
            throw new FilterFormatException($"{path}: a filter may nest at most {MaxDepth} levels.");
        }

        if (++nodes > MaxNodes)
        {
            throw new FilterFormatException($"a filter may have at most {MaxNodes} nodes.");
        }

        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new FilterFormatException(
                $"{path} must be an object: {{\"cohort\": {{\"partner\", \"cohort_id\"}}, \"op\": \"includes\"|\"excludes\"}}, {{\"and\": [...]}}, {{\"or\": [...]}} or {{\"not\": filter}}.");
        }

        var names = element.EnumerateObject().Select(p => p.Name).ToList();
        if (names.Contains("cohort"))
        {
            var extra = names.Where(n => n is not ("cohort" or "op")).ToList();
            if (extra.Count > 0)
            {
                throw new FilterFormatException($"{path} has unknown key '{extra[0]}'.");
            }

            return ParseCohort(element, path);
        }

        if (names.Count != 1)
        {
            throw new FilterFormatException(
                names.Count == 0
                    ? $"{path} is empty: expected one of 'cohort', 'and', 'or', 'not'."
                    : $"{path} must have exactly one of 'and', 'or', 'not' (found {string.Join(", ", names.Select(n => $"'{n}'"))}).");
        }

        var name = names[0];
        var value = element.GetProperty(name);
        switch (name)
        {
            case "and":
            case "or":
            {
                if (value.ValueKind != JsonValueKind.Array || value.GetArrayLength() == 0)
                {
                    throw new FilterFormatException($"{path}.{name} must be a non-empty array of filters.");
                }

                var operands = new List<Filter>();
                var i = 0;
                foreach (var item in value.EnumerateArray())
                {
                    operands.Add(ParseNode(item, $"{path}.{name}[{i++}]", depth + 1, ref nodes));
                }

                return name == "and" ? new AndFilter(operands) : new OrFilter(operands);
            }

            case "not":
                return new NotFilter(ParseNode(value, $"{path}.not", depth + 1, ref nodes));
            default:
                throw new FilterFormatException($"{path} has unknown key '{name}': expected one of 'cohort', 'and', 'or', 'not'.");
        }
    }

    private static CohortFilter ParseCohort(JsonElement element, string path)
    {
        var cohort = element.GetProperty("cohort");
        if (cohort.ValueKind != JsonValueKind.Object)
        {
            throw new FilterFormatException($"{path}.cohort must be an object with 'partner' and 'cohort_id'.");
        }

        foreach (var p in cohort.EnumerateObject())
        {
            if (p.Name is not ("partner" or "cohort_id"))
            {
                throw new FilterFormatException($"{path}.cohort has unknown key '{p.Name}'.");
            }
        }

        var partner = RequiredString(cohort, "partner", $"{path}.cohort.partner");
        var cohortId = RequiredString(cohort, "cohort_id", $"{path}.cohort.cohort_id");
        if (cohortId.Length > MaxCohortIdLength)
        {
            throw new FilterFormatException($"{path}.cohort.cohort_id must be at most {MaxCohortIdLength} characters.");
        }

        if (!element.TryGetProperty("op", out var op) || op.ValueKind != JsonValueKind.String
            || op.GetString() is not ("includes" or "excludes"))
        {
            throw new FilterFormatException($"{path}.op must be \"includes\" or \"excludes\".");
        }

        return new CohortFilter(new CohortKey(partner, cohortId), op.GetString() == "excludes");
    }

    private static string RequiredString(JsonElement obj, string name, string path)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.String
            || string.IsNullOrEmpty(value.GetString()))
        {
            throw new FilterFormatException($"{path} must be a non-empty string.");
        }

        return value.GetString()!;
    }
}
