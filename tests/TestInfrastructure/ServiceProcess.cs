using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace CohortBridge.Testing;

/// <summary>
/// One CohortBridge service running as a real process (the built dll), on a free loopback port, with its output
/// captured for assertions (for example, that no secret was ever logged) and copied to artifacts/test-logs.
/// </summary>
public sealed class ServiceProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly StreamWriter _logFile;

    private ServiceProcess(string name, Process process, Uri baseAddress, StreamWriter logFile)
    {
        Name = name;
        _process = process;
        BaseAddress = baseAddress;
        _logFile = logFile;
        Client = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(60) };
    }

    public string Name { get; }
    public Uri BaseAddress { get; }
    public HttpClient Client { get; }
    public bool HasExited => _process.HasExited;

    /// <summary>
    /// Waits until the process has exited and its output has been read to the end: <see cref="HasExited"/> turns true
    /// before the last lines reach <see cref="Output"/>.
    /// </summary>
    public async Task WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
    }

    /// <summary>Everything the process wrote to stdout and stderr so far.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>
    /// A port for a service process to listen on, free when chosen and never handed out twice in this test run. It is
    /// taken below the kernel's ephemeral range (32768+ here): a port the OS picks for <c>bind(0)</c> is free only
    /// until the service binds it, and meanwhile any outgoing connection of any process (database, broker, HTTP) may
    /// take it, which made a fixture's start fail now and then with its other processes left running.
    /// </summary>
    public static int FreePort()
    {
        lock (HandedOut)
        {
            for (var attempt = 0; attempt < 1000; attempt++)
            {
                var port = Random.Shared.Next(PortRangeStart, PortRangeEnd);
                if (!HandedOut.Add(port))
                {
                    continue;
                }

                try
                {
                    using var listener = new TcpListener(IPAddress.Loopback, port);
                    listener.Start();
                    return port;
                }
                catch (SocketException)
                {
                    // In use by something else: try another.
                }
            }
        }

        throw new InvalidOperationException($"No free port between {PortRangeStart} and {PortRangeEnd}.");
    }

    private const int PortRangeStart = 20_000;
    private const int PortRangeEnd = 32_000;
    private static readonly HashSet<int> HandedOut = [];

    public static string DllPath(string service)
    {
        // Run the services built in the same configuration as the tests themselves.
        var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}")
            ? "Release" : "Debug";
        var path = Path.Combine(Infrastructure.RepositoryRoot(), "services", service, "bin", configuration, "net10.0", service + ".dll");
        return File.Exists(path) ? path : throw new FileNotFoundException($"{service} is not built: {path}");
    }

    public static async Task<ServiceProcess> StartAsync(
        string service, IReadOnlyDictionary<string, string> environment, int? port = null, TimeSpan? readyTimeout = null,
        bool waitUntilReady = true)
    {
        port ??= FreePort();
        var baseAddress = new Uri($"http://127.0.0.1:{port}/");
        var info = new ProcessStartInfo("dotnet", [DllPath(service)])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Path.GetDirectoryName(DllPath(service))!,
        };
        info.Environment["ASPNETCORE_URLS"] = baseAddress.ToString().TrimEnd('/');
        info.Environment["ASPNETCORE_ENVIRONMENT"] = "Testing";
        info.Environment["DOTNET_gcServer"] = "0";
        info.Environment["Logging__LogLevel__Default"] = "Information";
        foreach (var (key, value) in environment)
        {
            info.Environment[key] = value;
        }

        var logDir = Path.Combine(Infrastructure.RepositoryRoot(), "artifacts", "test-logs");
        Directory.CreateDirectory(logDir);
        var logFile = new StreamWriter(Path.Combine(logDir, $"{service}-{port}.log")) { AutoFlush = true };
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var sp = new ServiceProcess(service, process, baseAddress, logFile);
        process.OutputDataReceived += (_, e) => sp.Append(e.Data);
        process.ErrorDataReceived += (_, e) => sp.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (waitUntilReady)
        {
            await sp.WaitUntilReadyAsync(readyTimeout ?? TimeSpan.FromSeconds(120));
        }

        return sp;
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
            _logFile.WriteLine(line);
        }
    }

    /// <summary>Waits for /health/ready at <paramref name="healthAddress"/> (default: the service's own address).</summary>
    public async Task WaitUntilReadyAsync(TimeSpan timeout, Uri? healthAddress = null)
    {
        var deadline = DateTime.UtcNow + timeout;
        using var probe = new HttpClient { BaseAddress = healthAddress ?? BaseAddress, Timeout = TimeSpan.FromSeconds(5) };
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"{Name} exited with code {_process.ExitCode}:\n{Output}");
            }

            try
            {
                using var response = await probe.GetAsync("health/ready");
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"{Name} was not ready within {timeout}:\n{Output}");
    }

    /// <summary>Graceful stop (SIGTERM), then a kill if it does not end in time.</summary>
    public async Task StopAsync(TimeSpan? grace = null)
    {
        if (_process.HasExited)
        {
            return;
        }

        using (var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        using var cts = new CancellationTokenSource(grace ?? TimeSpan.FromSeconds(30));
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
        }
    }

    /// <summary>Ends the process at once, as a crash would.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(10));
        Client.Dispose();
        _process.Dispose();
        lock (_output)
        {
            _logFile.Dispose();
        }
    }
}
