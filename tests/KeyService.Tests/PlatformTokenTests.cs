using CohortBridge.ServiceDefaults;

namespace CohortBridge.KeyService.Tests;

/// <summary>Bearer tokens from configuration, with several values during a rotation.</summary>
public sealed class PlatformTokenTests
{
    [Fact]
    public void Token_DuringRotation_AcceptsEveryListedValueAndSendsTheFirst()
    {
        var token = new ServiceToken(" new-token , old-token ");

        Assert.Equal("Bearer new-token", token.Header.ToString());
        Assert.True(token.Matches("Bearer new-token"));
        Assert.True(token.Matches("bearer  old-token "));
        Assert.False(token.Matches("Bearer other"));
        Assert.False(token.Matches("Bearer new-token,old-token"));
        Assert.False(token.Matches("Basic new-token"));
        Assert.False(token.Matches(null));
        Assert.Throws<ArgumentException>(() => new AdminToken(" , "));
    }
}
