using System.Buffers.Text;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace CohortBridge.Benchmarks;

/// <summary>A complete HTTP response as the load sees it.</summary>
internal readonly record struct HttpAnswer(int Status, string Body);

/// <summary>
/// Keep-alive HTTP/1.1 GET load in the manner of wrk: one thread keeps one request outstanding on each connection,
/// waits on all connections at once (<c>Socket.Select</c>, poll(2) on Linux) and sends a connection's next
/// request as soon as its response is complete.
/// </summary>
/// <remarks>
/// On this 2-core machine the load generator shares the cores with the service it measures, so every microsecond it
/// spends is missing from the figure. With a blocking thread per connection every response woke a sleeping thread,
/// and on this paravirtualised VM a wake-up (inter-processor interrupt, context switch) is the most expensive thing
/// the kernel does. Against one SegmentService process (10M users, 16 connections, 8 s passes), the blocking client
/// gave 22,216–22,685 checks/s and cost itself 30–31 µs and SegmentService 53–54 µs of CPU per check; this one gave
/// 27,833–29,460/s at 16–19 µs and 44–47 µs. Earlier clients: HttpClient with 32 workers 8,743/s, an async connection
/// per worker 16,200–21,400/s.
/// </remarks>
internal static class PolledHttpLoad
{
    private static readonly TimeSpan Stall = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Runs the load for <paramref name="duration"/> and returns the latency (ms) of every response completed in that
    /// time; throws on the first answer <paramref name="accept"/> refuses, on a closed connection, and when no
    /// response arrives for 30 s.
    /// </summary>
    public static double[] Run(
        Uri baseUri, string bearerToken, int connections, TimeSpan duration, Func<Random, string> pathAndQuery,
        Func<HttpAnswer, bool> accept)
    {
        var tail = Encoding.ASCII.GetBytes($" HTTP/1.1\r\nHost: {baseUri.Host}:{baseUri.Port}\r\nAuthorization: Bearer {bearerToken}\r\n\r\n");
        var random = new Random(connections);
        var open = new List<Connection>(connections);
        try
        {
            for (var i = 0; i < connections; i++)
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                open.Add(new Connection(socket));
                socket.Connect(baseUri.Host, baseUri.Port);
            }

            var bySocket = open.ToDictionary(c => c.Socket);
            var latencies = new List<double>(1 << 20);
            var ready = new List<Socket>(connections);
            var end = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
            open.ForEach(c => c.Send(pathAndQuery(random), tail));
            var lastAnswer = Stopwatch.GetTimestamp();
            while (Stopwatch.GetTimestamp() < end)
            {
                ready.Clear();
                ready.AddRange(bySocket.Keys);
                Socket.Select(ready, null, null, 100_000);
                foreach (var socket in ready)
                {
                    var connection = bySocket[socket];
                    if (connection.Receive() is not { } answer)
                    {
                        continue;
                    }

                    latencies.Add(Stopwatch.GetElapsedTime(connection.SentAt).TotalMilliseconds);
                    if (!accept(answer))
                    {
                        throw new InvalidOperationException($"GET answered {answer.Status}: {answer.Body}");
                    }

                    lastAnswer = Stopwatch.GetTimestamp();
                    connection.Send(pathAndQuery(random), tail);
                }

                if (Stopwatch.GetElapsedTime(lastAnswer) > Stall)
                {
                    throw new TimeoutException($"No response for {Stall.TotalSeconds:F0} s.");
                }
            }

            return [.. latencies];
        }
        finally
        {
            // Requests still outstanding are abandoned with their connections.
            open.ForEach(c => c.Socket.Dispose());
        }
    }

    /// <summary>
    /// Parses one complete response (Content-Length or chunked body) from the start of <paramref name="data"/>;
    /// returns null while it is incomplete.
    /// </summary>
    private static HttpAnswer? TryParse(ReadOnlySpan<byte> data, out int consumed)
    {
        consumed = 0;
        var headerEnd = data.IndexOf("\r\n\r\n"u8);
        if (headerEnd < 0)
        {
            return null;
        }

        if (!data.StartsWith("HTTP/1.1 "u8) || !Utf8Parser.TryParse(data[9..12], out int status, out _))
        {
            throw new InvalidDataException("Not an HTTP/1.1 status line: " + Encoding.ASCII.GetString(data[..Math.Min(data.Length, 40)]));
        }

        long contentLength = -1;
        var chunked = false;
        foreach (var range in data[..headerEnd].Split("\r\n"u8))
        {
            var line = Encoding.ASCII.GetString(data[range]);
            if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
            {
                contentLength = long.Parse(line.AsSpan(15).Trim(), CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("Transfer-Encoding:", StringComparison.OrdinalIgnoreCase))
            {
                chunked = line.Contains("chunked", StringComparison.OrdinalIgnoreCase);
            }
        }

        var position = headerEnd + 4;
        if (!chunked)
        {
            if (contentLength < 0)
            {
                throw new InvalidDataException("A response without Content-Length or chunked encoding cannot be kept alive.");
            }

            if (data.Length - position < contentLength)
            {
                return null;
            }

            consumed = position + (int)contentLength;
            return new HttpAnswer(status, Encoding.UTF8.GetString(data[position..consumed]));
        }

        var body = new StringBuilder();
        while (true)
        {
            var lineEnd = data[position..].IndexOf("\r\n"u8);
            if (lineEnd < 0)
            {
                return null;
            }

            var sizeText = Encoding.ASCII.GetString(data.Slice(position, lineEnd)).Split(';')[0].Trim();
            var size = int.Parse(sizeText, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            position += lineEnd + 2;
            if (size == 0)
            {
                // Trailers, if any, end with an empty line.
                var trailersEnd = data[position..].StartsWith("\r\n"u8) ? 0 : data[position..].IndexOf("\r\n\r\n"u8);
                if (trailersEnd < 0)
                {
                    return null;
                }

                consumed = position + trailersEnd + (trailersEnd == 0 ? 2 : 4);
                return new HttpAnswer(status, body.ToString());
            }

            if (data.Length - position < size + 2)
            {
                return null;
            }

            body.Append(Encoding.UTF8.GetString(data.Slice(position, size)));
            position += size + 2;
        }
    }

    private sealed class Connection(Socket socket)
    {
        private readonly byte[] _request = new byte[4 * 1024];
        private readonly byte[] _buffer = new byte[16 * 1024];
        private int _length;

        public Socket Socket { get; } = socket;

        public long SentAt { get; private set; }

        public void Send(string pathAndQuery, byte[] tail)
        {
            var length = Encoding.ASCII.GetBytes("GET ", _request);
            length += Encoding.ASCII.GetBytes(pathAndQuery, _request.AsSpan(length));
            tail.CopyTo(_request.AsSpan(length));
            length += tail.Length;
            SentAt = Stopwatch.GetTimestamp();
            Socket.Send(_request.AsSpan(0, length));
        }

        /// <summary>Reads what has arrived (the socket is readable); the response once it is complete.</summary>
        public HttpAnswer? Receive()
        {
            if (_length == _buffer.Length)
            {
                throw new InvalidDataException("Response larger than the buffer.");
            }

            var read = Socket.Receive(_buffer.AsSpan(_length));
            if (read == 0)
            {
                throw new IOException("The server closed the connection.");
            }

            _length += read;
            if (TryParse(_buffer.AsSpan(0, _length), out var consumed) is not { } answer)
            {
                return null;
            }

            // One request is outstanding per connection, so nothing can follow its response.
            if (consumed != _length)
            {
                throw new InvalidDataException("Data after the response to the only request outstanding.");
            }

            _length = 0;
            return answer;
        }
    }
}
