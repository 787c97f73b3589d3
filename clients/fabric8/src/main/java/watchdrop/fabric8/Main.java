package watchdrop.fabric8;

import io.fabric8.kubernetes.client.Config;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientBuilder;
import io.fabric8.kubernetes.client.Version;
import java.io.File;
import java.util.Map;

/**
 * The fabric8 column of the watchdrop matrix: io.fabric8:kubernetes-client with the HTTP client
 * its artifact brings by default, following the watcher contract in clients/README.md. Settings
 * come from WATCHDROP_* variables and what the library did is printed as JSON lines on stdout.
 * It adds no timeouts, keepalives or retries: fabric8's defaults are what the matrix measures.
 */
public final class Main {
  static final String CLIENT = "fabric8";
  static final String LIBRARY = "io.fabric8:kubernetes-client";

  static final int EXIT_OK = 0;
  static final int EXIT_CRASH = 1;
  static final int EXIT_USAGE = 2;

  /** Set before the watcher's own System.exit, so the shutdown hook keeps that exit code. */
  private static volatile boolean exitingOnPurpose;

  private Main() {}

  public static void main(String[] args) {
    Emitter out = Emitter.stdout();
    installStopHook(out);
    int code;
    try {
      code = run(out, System.getenv());
    } catch (Throwable t) {
      Map<String, Object> f = Emitter.fields();
      f.put("message", "watcher crashed: " + Errors.describe(t));
      out.emit("error", f);
      code = EXIT_CRASH;
    }
    exitingOnPurpose = true;
    out.close();
    // System.exit, not a return: the HTTP client's event-loop threads would keep the JVM alive.
    System.exit(code);
  }

  /**
   * SIGTERM (how the runner ends a watch) and SIGINT run the JVM's shutdown hooks and would end
   * the process with 143/130; the contract wants 0. The hook stops the output (so no line is cut
   * and nothing the dying library says is printed) and halts with 0. It leaves an exit the
   * watcher chose itself alone.
   */
  private static void installStopHook(Emitter out) {
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      if (exitingOnPurpose) {
        return;
      }
      out.close();
      Runtime.getRuntime().halt(EXIT_OK);
    }, "watchdrop-stop"));
  }

  static int run(Emitter out, Map<String, String> env) throws InterruptedException {
    Map<String, Object> started = Emitter.fields();
    started.put("client", CLIENT);
    started.put("library", LIBRARY);
    started.put("version", Version.clientVersion());
    started.put("style", Settings.reportedStyle(env));
    started.put("java", System.getProperty("java.version"));
    out.emit("started", started);

    Settings settings;
    try {
      settings = Settings.fromEnv(env);
    } catch (Settings.UsageError e) {
      Map<String, Object> f = Emitter.fields();
      f.put("message", e.getMessage());
      out.emit("error", f);
      return EXIT_USAGE;
    }
    Observer observer = new Observer(out);
    KubernetesClient client;
    try {
      // The kubeconfig the runner wrote, or the pod's in-cluster config (kubernetes backend).
      Config config = settings.kubeconfig() == null
          ? Config.autoConfigure(null)
          : Config.fromKubeconfig(new File(settings.kubeconfig()));
      client = new KubernetesClientBuilder()
          .withConfig(config)
          .withHttpClientBuilderConsumer(b -> b.addOrReplaceInterceptor(Observer.NAME, observer))
          .build();
      Warmup.decode(client);
      out.emit("client-config", describe(client));
    } catch (RuntimeException e) {
      Map<String, Object> f = Emitter.fields();
      f.put("message", Errors.describe(e));
      out.emit("error", f);
      return EXIT_CRASH;
    }

    if (settings.scenario().equals(Settings.IDLE_REQUEST)) {
      IdleRequests.run(client, settings, observer, out);
      return EXIT_OK;
    }
    Watching watching = new Watching(client, settings.namespace(), observer, out);
    if (settings.style().equals(Settings.STYLE_INFORMER)) {
      watching.runInformer();
    } else {
      watching.runWatch();
    }
    return EXIT_OK;
  }

  /**
   * Not in the contract's table (the runner ignores it): which HTTP client fabric8 picked and the
   * configuration defaults that decide how a watch lives.
   */
  static Map<String, Object> describe(KubernetesClient client) {
    Config c = client.getConfiguration();
    Map<String, Object> f = Emitter.fields();
    f.put("httpClient", client.getHttpClient().getClass().getName());
    f.put("websocketPingIntervalMs", c.getWebsocketPingInterval());
    f.put("requestTimeoutMs", c.getRequestTimeout());
    f.put("connectionTimeoutMs", c.getConnectionTimeout());
    f.put("watchReconnectIntervalMs", c.getWatchReconnectInterval());
    f.put("watchReconnectLimit", c.getWatchReconnectLimit());
    f.put("requestRetryBackoffLimit", c.getRequestRetryBackoffLimit());
    f.put("http2Disable", c.isHttp2Disable());
    return f;
  }
}
