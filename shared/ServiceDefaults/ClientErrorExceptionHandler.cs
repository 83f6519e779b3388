using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Npgsql;

namespace CohortBridge.ServiceDefaults;

/// <summary>
/// The client's own errors that reach the exception handler answer as 4xx problems, not 500: a request the framework
/// could not bind (a query value of the wrong type: thrown where RouteHandlerOptions.ThrowOnBadRequest is on, i.e. in
/// Development, as `make up` runs the services), and text PostgreSQL cannot store (U+0000, SQLSTATE 22021) that no
/// validator caught. Validators answer both with their own texts first; this is the net under them.
/// </summary>
public sealed class ClientErrorExceptionHandler(IProblemDetailsService problems) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        var (status, detail) = exception switch
        {
            // Its status says why (400 a value of the wrong form, 413 a body over the limit, ...); the title follows it.
            BadHttpRequestException bad => (bad.StatusCode, "The request could not be read."),
            PostgresException { SqlState: PostgresErrorCodes.CharacterNotInRepertoire } =>
                (StatusCodes.Status400BadRequest, "Text values must not contain the character U+0000."),
            _ => (0, ""),
        };
        if (status == 0)
        {
            return false;
        }

        httpContext.Response.StatusCode = status;
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            Exception = exception,
            ProblemDetails = { Status = status, Detail = detail },
        });
    }
}
