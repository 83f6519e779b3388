using System.Data;
using Dapper;

namespace CohortBridge.CohortService.Data;

/// <summary>
/// timestamptz ⇄ DateTimeOffset for Dapper: Npgsql reads timestamptz as a UTC DateTime, and only accepts UTC offsets
/// when writing one.
/// </summary>
public sealed class DateTimeOffsetHandler : SqlMapper.TypeHandler<DateTimeOffset>
{
    private static int _registered;

    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 0)
        {
            SqlMapper.AddTypeHandler(new DateTimeOffsetHandler());
        }
    }

    public override void SetValue(IDbDataParameter parameter, DateTimeOffset value) => parameter.Value = value.ToUniversalTime();

    public override DateTimeOffset Parse(object value) => value switch
    {
        DateTimeOffset d => d,
        DateTime d => new DateTimeOffset(DateTime.SpecifyKind(d, DateTimeKind.Utc)),
        _ => throw new InvalidCastException($"Cannot read {value.GetType()} as DateTimeOffset."),
    };
}
