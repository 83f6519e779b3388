using CohortBridge.CohortService.Directory;
using CohortBridge.Contracts;
using MassTransit;

namespace CohortBridge.CohortService.Consumers;

/// <summary>Feeds the directory from an upstream user-tracking service: the same code path as the admin bulk API.</summary>
public sealed class UserProfilesChangedConsumer(UserDirectory directory) : IConsumer<UserProfilesChanged>
{
    public async Task Consume(ConsumeContext<UserProfilesChanged> context)
    {
        var m = context.Message;
        if (m.Upserts.Count > 0)
        {
            await directory.UpsertAsync(m.WorkspaceId, m.Upserts.Select((p, i) => new ProfileLine(i + 1, p)), context.CancellationToken);
        }

        if (m.DeletedExternalIds.Count > 0)
        {
            await directory.DeleteAsync(m.WorkspaceId, m.DeletedExternalIds, context.CancellationToken);
        }
    }
}
