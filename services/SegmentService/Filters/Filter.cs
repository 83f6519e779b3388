using System.Text.Json;

namespace CohortBridge.SegmentService.Filters;

/// <summary>A cohort of one workspace: the partner and the partner's cohort id.</summary>
public readonly record struct CohortKey(string Partner, string CohortId)
{
    public override string ToString() => $"{Partner}/{CohortId}";
}

/// <summary>
/// A segment filter tree as in API.md: <c>{"cohort": {...}, "op": "includes"|"excludes"}</c>,
/// <c>{"and": [...]}</c>, <c>{"or": [...]}</c>, <c>{"not": filter}</c>.
/// </summary>
public abstract record Filter
{
    /// <summary>Every cohort the tree names (for validation against the projection).</summary>
    public IEnumerable<CohortKey> Cohorts() => this switch
    {
        CohortFilter c => [c.Cohort],
        AndFilter a => a.Operands.SelectMany(o => o.Cohorts()),
        OrFilter o => o.Operands.SelectMany(x => x.Cohorts()),
        NotFilter n => n.Operand.Cohorts(),
        _ => [],
    };

    /// <summary>Writes the canonical JSON form (what is stored and returned).</summary>
    public void WriteTo(Utf8JsonWriter writer)
    {
        writer.WriteStartObject();
        switch (this)
        {
            case CohortFilter c:
                writer.WriteStartObject("cohort");
                writer.WriteString("partner", c.Cohort.Partner);
                writer.WriteString("cohort_id", c.Cohort.CohortId);
                writer.WriteEndObject();
                writer.WriteString("op", c.Excludes ? "excludes" : "includes");
                break;
            case AndFilter a:
                WriteList(writer, "and", a.Operands);
                break;
            case OrFilter o:
                WriteList(writer, "or", o.Operands);
                break;
            case NotFilter n:
                writer.WritePropertyName("not");
                n.Operand.WriteTo(writer);
                break;
            default:
                throw new InvalidOperationException("Unknown filter node.");
        }

        writer.WriteEndObject();
    }

    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            WriteTo(writer);
        }

        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    public JsonElement ToJsonElement()
    {
        using var doc = JsonDocument.Parse(ToJson());
        return doc.RootElement.Clone();
    }

    private static void WriteList(Utf8JsonWriter writer, string name, IReadOnlyList<Filter> operands)
    {
        writer.WriteStartArray(name);
        foreach (var operand in operands)
        {
            operand.WriteTo(writer);
        }

        writer.WriteEndArray();
    }
}

/// <summary><c>includes</c>: the cohort's members; <c>excludes</c>: the live users not in the cohort.</summary>
public sealed record CohortFilter(CohortKey Cohort, bool Excludes) : Filter;

public sealed record AndFilter(IReadOnlyList<Filter> Operands) : Filter;

public sealed record OrFilter(IReadOnlyList<Filter> Operands) : Filter;

/// <summary>The live users not matched by the operand.</summary>
public sealed record NotFilter(Filter Operand) : Filter;
