// The dotnet column of the watchdrop matrix: the official C# client, KubernetesClient.
//
// Follows the watcher contract in clients/README.md: settings come from WATCHDROP_* variables,
// and what the library did is printed as JSON lines on stdout. The watch is the one the
// library's examples/watch shows with its callback API:
//
//   var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(path);
//   var client = new Kubernetes(config);
//   client.CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(ns, watch: true)
//         .Watch<V1ConfigMap, V1ConfigMapList>(onEvent, onError, onClosed);
//
// with library defaults, wrapped in the loop a long-running program writes: when the watcher
// closes (onClosed: the server ended the stream, or a transport error was reported to onError
// first), watch again from scratch. Nothing else is added unless a variant asks for it:
//
//   WATCHDROP_REQUEST_TIMEOUT=<s>  timeoutSeconds on each watch (the server ends it), then the
//                                  loop watches again.
//
// idle-request: ListNamespacedConfigMapWithHttpMessagesAsync twice per round, WATCHDROP_IDLE
// seconds apart, through the same Kubernetes object (its HttpClient pool).

using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Watchdrop;

internal static class Program
{
    private const string ClientName = "dotnet";
    private const string LibraryName = "KubernetesClient";
    private static readonly string[] Styles = { "watch" };

    // After a failed watch request the loop waits this long before watching again. Without it an
    // unreachable API server turns the loop into a busy spin that floods stdout; a user's loop
    // would pause too. A watch that simply closed is restarted at once, as user code does.
    private static readonly TimeSpan RetryPause = TimeSpan.FromSeconds(1);

    private const int ExitOk = 0;
    private const int ExitCrash = 1;
    private const int ExitUsage = 2;

    private static readonly object StdoutLock = new();

    private sealed class UsageException : Exception
    {
        public UsageException(string message) : base(message) { }
    }

    private sealed record Settings(
        string Kubeconfig,
        string Namespace,
        string Scenario,
        string Style,
        int Rounds,
        double IdleSeconds,
        int? RequestTimeoutSeconds)
    {
        public static Settings FromEnv()
        {
            string Env(string name) => Environment.GetEnvironmentVariable(name) ?? "";
            var scenario = Env("WATCHDROP_SCENARIO");
            var style = Env("WATCHDROP_STYLE");
            if (style == "") style = Styles[0];
            var ns = Env("WATCHDROP_NAMESPACE");
            if (Array.IndexOf(Styles, style) < 0)
                throw new UsageException($"WATCHDROP_STYLE={style}: this client implements [{string.Join(", ", Styles)}]");
            if (ns == "")
                throw new UsageException("WATCHDROP_NAMESPACE is not set");
            var rounds = 0;
            var idle = 0.0;
            if (scenario == "idle-request")
            {
                if (!int.TryParse(Env("WATCHDROP_ROUNDS"), out rounds) ||
                    !double.TryParse(Env("WATCHDROP_IDLE"), System.Globalization.NumberStyles.Float,
                        System.Globalization.CultureInfo.InvariantCulture, out idle))
                    throw new UsageException("idle-request needs WATCHDROP_ROUNDS and WATCHDROP_IDLE");
                if (rounds < 1 || idle < 0 || double.IsInfinity(idle) || double.IsNaN(idle))
                    throw new UsageException($"WATCHDROP_ROUNDS={rounds} WATCHDROP_IDLE={idle}: out of range");
            }
            else if (scenario != "watch")
            {
                throw new UsageException($"WATCHDROP_SCENARIO={scenario}: want 'watch' or 'idle-request'");
            }
            int? timeout = null;
            var rawTimeout = Env("WATCHDROP_REQUEST_TIMEOUT");
            if (rawTimeout != "")
            {
                if (!int.TryParse(rawTimeout, out var t) || t < 1)
                    throw new UsageException($"WATCHDROP_REQUEST_TIMEOUT={rawTimeout}: want a whole number of seconds, at least 1");
                timeout = t;
            }
            var kubeconfig = Env("WATCHDROP_KUBECONFIG");
            return new Settings(kubeconfig == "" ? null : kubeconfig, ns, scenario, style, rounds, idle, timeout);
        }
    }

    /// Print one contract line and flush it at once, so ts stays honest against the pcap. The
    /// library calls the watch callbacks from thread-pool threads, hence the lock.
    private static void Emit(string evt, IDictionary<string, object> extra = null)
    {
        var line = new Dictionary<string, object>
        {
            ["ts"] = (DateTime.UtcNow - DateTime.UnixEpoch).TotalSeconds,
            ["event"] = evt,
        };
        if (extra != null)
        {
            foreach (var (key, value) in extra) line[key] = value;
        }
        var json = JsonSerializer.Serialize(line);
        lock (StdoutLock)
        {
            Console.Out.WriteLine(json);
            Console.Out.Flush();
        }
    }

    private static Dictionary<string, object> ErrorFields(Exception e)
    {
        var fields = new Dictionary<string, object>
        {
            ["message"] = e.Message,
            ["exception"] = e.GetType().FullName,
        };
        if (e.InnerException != null) fields["inner"] = $"{e.InnerException.GetType().FullName}: {e.InnerException.Message}";
        if (e is HttpOperationException hoe && hoe.Response != null) fields["status"] = (int)hoe.Response.StatusCode;
        return fields;
    }

    /// The library version actually loaded: the informational version without its "+commit".
    private static string LibraryVersion()
    {
        var asm = typeof(Kubernetes).Assembly;
        var info = asm.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        if (!string.IsNullOrEmpty(info)) return info.Split('+')[0];
        return asm.GetName().Version?.ToString() ?? "unknown";
    }

    private static string ReportedStyle()
    {
        if (Environment.GetEnvironmentVariable("WATCHDROP_SCENARIO") == "idle-request") return "list";
        var style = Environment.GetEnvironmentVariable("WATCHDROP_STYLE");
        return string.IsNullOrEmpty(style) ? Styles[0] : style;
    }

    private static void EventSeen(string type, V1ConfigMap item)
    {
        string value = null;
        item?.Data?.TryGetValue("value", out value);
        Emit("event-seen", new Dictionary<string, object>
        {
            ["type"] = type,
            ["name"] = item?.Metadata?.Name,
            ["value"] = value,
            ["resourceVersion"] = item?.Metadata?.ResourceVersion,
        });
    }

    private static async Task RunWatch(Kubernetes client, Settings settings, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Exception lastError = null;
            var listTask = client.CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(
                settings.Namespace, watch: true, timeoutSeconds: settings.RequestTimeoutSeconds);
            // Observing the request's task changes nothing for the watcher built on it: it only
            // tells us when the response headers arrived, which is when the watch is open.
            _ = listTask.ContinueWith(t =>
            {
                if (t.IsCompletedSuccessfully)
                    Emit("watch-opened", new Dictionary<string, object> { ["status"] = (int)t.Result.Response.StatusCode });
            }, TaskScheduler.Default);
            // The callback API the library's examples/watch shows (WatchUsingCallback). It carries
            // [Obsolete("This method will be deprecated in future versions.")], like its
            // IAsyncEnumerable sibling WatchAsync, and is still what that example and most user
            // code call, so the warning is silenced here and nowhere else.
#pragma warning disable CS0618
            using var watcher = listTask.Watch<V1ConfigMap, V1ConfigMapList>(
                onEvent: (type, item) =>
                {
                    // The enum's names upper-cased are its wire names (ADDED, MODIFIED, ...);
                    // going by the name keeps this independent of the enum's namespace, which
                    // moved between releases.
                    var wire = type.ToString().ToUpperInvariant();
                    if (wire is "ADDED" or "MODIFIED" or "DELETED")
                        EventSeen(wire, item);
                },
                onError: e =>
                {
                    lastError = e;
                    Emit("error", ErrorFields(e));
                },
                onClosed: () => closed.TrySetResult());
#pragma warning restore CS0618
            try
            {
                await closed.Task.WaitAsync(stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            if (lastError != null)
            {
                Emit("reconnect", new Dictionary<string, object> { ["reason"] = $"watch closed after {lastError.GetType().Name}" });
                try { await Task.Delay(RetryPause, stop); } catch (OperationCanceledException) { return; }
            }
            else
            {
                Emit("reconnect", new Dictionary<string, object> { ["reason"] = "watch closed" });
            }
        }
    }

    private static async Task RunIdleRequests(Kubernetes client, Settings settings, CancellationToken stop)
    {
        for (var round = 1; round <= settings.Rounds; round++)
        {
            for (var request = 1; request <= 2; request++)
            {
                if (request == 2) await Task.Delay(TimeSpan.FromSeconds(settings.IdleSeconds), stop);
                Emit("request-sent", new Dictionary<string, object> { ["round"] = round, ["request"] = request });
                try
                {
                    var resp = await client.CoreV1.ListNamespacedConfigMapWithHttpMessagesAsync(
                        settings.Namespace, cancellationToken: stop);
                    Emit("request-done", new Dictionary<string, object>
                    {
                        ["round"] = round,
                        ["request"] = request,
                        ["ok"] = true,
                        ["status"] = (int)resp.Response.StatusCode,
                        ["items"] = resp.Body?.Items?.Count ?? 0,
                    });
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    throw;
                }
                catch (Exception e)
                {
                    var fields = ErrorFields(e);
                    fields["round"] = round;
                    fields["request"] = request;
                    fields["ok"] = false;
                    Emit("request-done", fields);
                }
            }
        }
    }

    private static async Task<int> Main()
    {
        Emit("started", new Dictionary<string, object>
        {
            ["client"] = ClientName,
            ["library"] = LibraryName,
            ["version"] = LibraryVersion(),
            ["style"] = ReportedStyle(),
            ["dotnet"] = RuntimeInformation.FrameworkDescription,
        });
        Settings settings;
        try
        {
            settings = Settings.FromEnv();
        }
        catch (UsageException e)
        {
            Emit("error", new Dictionary<string, object> { ["message"] = e.Message });
            return ExitUsage;
        }

        // SIGTERM/SIGINT: cancel the run and exit 0 (the contract). Cancelling the default action
        // keeps the runtime from tearing the process down before Main returns.
        using var stopSource = new CancellationTokenSource();
        void OnSignal(PosixSignalContext ctx)
        {
            ctx.Cancel = true;
            stopSource.Cancel();
        }
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);

        Kubernetes client;
        try
        {
            var config = settings.Kubeconfig != null
                ? KubernetesClientConfiguration.BuildConfigFromConfigFile(settings.Kubeconfig)
                : KubernetesClientConfiguration.InClusterConfig();
            client = new Kubernetes(config);
        }
        catch (Exception e)
        {
            Emit("error", ErrorFields(e));
            return ExitCrash;
        }

        using (client)
        {
            try
            {
                if (settings.Scenario == "idle-request")
                    await RunIdleRequests(client, settings, stopSource.Token);
                else
                    await RunWatch(client, settings, stopSource.Token);
            }
            catch (OperationCanceledException) when (stopSource.IsCancellationRequested)
            {
                // SIGTERM while idle or in a request: a normal end.
            }
        }
        return ExitOk;
    }
}
