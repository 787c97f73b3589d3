package watchdrop.java;

import io.kubernetes.client.openapi.ApiClient;
import java.io.IOException;
import java.io.InputStream;
import java.util.Map;
import java.util.Properties;

/**
 * The java column of the watchdrop matrix: io.kubernetes:client-java, following the watcher
 * contract in clients/README.md. Settings come from WATCHDROP_* variables and what the library
 * did is printed as JSON lines on stdout. It adds no timeouts, keepalives or retries: what the
 * ApiClient of the chosen style does by default is what the matrix measures.
 */
public final class Main {
  static final String CLIENT = "java";
  static final String LIBRARY = "io.kubernetes:client-java";

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
    // System.exit, not a return: OkHttp's pool and dispatcher threads would keep the JVM alive.
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
    started.put("version", libraryVersion());
    started.put("style", Settings.styleOf(env));
    started.put("java", System.getProperty("java.version"));
    started.put("okhttp", okhttp3.OkHttp.VERSION);
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
    Observer observer = new Observer();
    ApiClient client;
    try {
      client = Clients.build(settings, observer);
    } catch (IOException | RuntimeException e) {
      Map<String, Object> f = Emitter.fields();
      f.put("message", Errors.describe(e));
      out.emit("error", f);
      return EXIT_CRASH;
    }
    Warmup.decode(client);
    // Not in the contract's table (the runner ignores it): the OkHttp settings the style gave.
    out.emit("client-config", Clients.describe(client));

    if (settings.scenario().equals(Settings.IDLE_REQUEST)) {
      IdleRequests.run(client, settings, observer, out);
      return EXIT_OK;
    }
    new WatchLoop(client, settings.namespace(), observer, out).run();
    return EXIT_OK;
  }

  /** The client-java version on the classpath, read from its jar, so `started` states what was built. */
  static String libraryVersion() {
    try (InputStream in = Main.class.getResourceAsStream("/META-INF/maven/io.kubernetes/client-java/pom.properties")) {
      if (in == null) {
        return "unknown";
      }
      Properties p = new Properties();
      p.load(in);
      return p.getProperty("version", "unknown");
    } catch (IOException e) {
      return "unknown";
    }
  }
}
