using System.Runtime.CompilerServices;
using Dapper;

namespace CohortBridge.CohortService.Tests;

/// <summary>
/// Dapper as the service host configures it (ServiceDefaults.Database), set once before any test runs. Dapper caches
/// a type's column mapping on its first query, so a test class that queried before setting this itself would leave
/// snake_case columns (external_id) unmapped for every class in the process.
/// </summary>
internal static class DapperSettings
{
    [ModuleInitializer]
    internal static void Apply() => DefaultTypeMap.MatchNamesWithUnderscores = true;
}
