using CohortBridge.Testing;

namespace CohortBridge.EndToEnd.Tests;

/// <summary>The whole platform as real processes, shared by the tests of one class.</summary>
public sealed class PlatformFixture : PlatformProcesses, IAsyncLifetime
{
    public Task InitializeAsync() => StartAllAsync();

    Task IAsyncLifetime.DisposeAsync() => DisposeAsync().AsTask();
}
