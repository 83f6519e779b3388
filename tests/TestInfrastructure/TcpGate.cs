using System.Net;
using System.Net.Sockets;

namespace CohortBridge.Testing;

/// <summary>
/// A TCP relay to a real server that a test opens when it chooses: until then every connection is dropped at once, as
/// by a server that is down (the client retries as it would in production); once open, bytes pass both ways.
/// </summary>
public sealed class TcpGate : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly string _host;
    private readonly int _port;
    private readonly Task _accepting;
    private volatile bool _open;

    private TcpGate(string host, int port)
    {
        _host = host;
        _port = port;
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync();
    }

    /// <summary>The local port to give the client instead of the server's.</summary>
    public int Port { get; }

    /// <summary>A closed gate in front of <paramref name="host"/>:<paramref name="port"/>.</summary>
    public static TcpGate Closed(string host, int port) => new(host, port);

    public void Open() => _open = true;

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            if (_open)
            {
                _ = RelayAsync(client);
            }
            else
            {
                client.Dispose();
            }
        }
    }

    private async Task RelayAsync(TcpClient client)
    {
        using (client)
        using (var server = new TcpClient())
        {
            try
            {
                await server.ConnectAsync(_host, _port, _stop.Token);
                var fromClient = client.GetStream();
                var fromServer = server.GetStream();
                // Either side closing ends the relay, and disposing both closes the other side.
                await Task.WhenAny(fromClient.CopyToAsync(fromServer, _stop.Token), fromServer.CopyToAsync(fromClient, _stop.Token));
            }
            catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // The connection ended; the client reconnects if it still needs one.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
