using CohortBridge.Testing;

namespace CohortBridge.EndToEnd.Tests;

/// <summary>
/// The whole platform as real processes, shared by the tests of one class. A derived fixture sets
/// <see cref="PlatformProcesses.Overrides"/> in its constructor for a platform configured otherwise.
/// </summary>
public class PlatformFixture : PlatformProcesses, IAsyncLifetime
{
    public Task InitializeAsync() => StartAllAsync();

    Task IAsyncLifetime.DisposeAsync() => DisposeAsync().AsTask();
}
