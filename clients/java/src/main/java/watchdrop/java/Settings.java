package watchdrop.java;

import java.util.List;
import java.util.Map;

/**
 * Everything the runner and the variant pass through the environment (clients/README.md).
 *
 * @param kubeconfig path of the cell's kubeconfig; null: in-cluster config (kubernetes backend)
 * @param namespace the namespace to watch ConfigMaps in
 * @param scenario {@code watch} or {@code idle-request}
 * @param style how the ApiClient is made: {@code clientbuilder} or {@code plain-apiclient}
 * @param rounds idle-request: number of rounds
 * @param idleSeconds idle-request: seconds between the two requests of a round
 */
record Settings(String kubeconfig, String namespace, String scenario, String style, int rounds, double idleSeconds) {

  static final String WATCH = "watch";
  static final String IDLE_REQUEST = "idle-request";
  /** ClientBuilder from the kubeconfig, as the library's examples make an ApiClient (the default). */
  static final String CLIENTBUILDER = "clientbuilder";
  /** {@code new ApiClient()} with base path, token and CA set by hand: OkHttp's own defaults. */
  static final String PLAIN_APICLIENT = "plain-apiclient";
  static final List<String> STYLES = List.of(CLIENTBUILDER, PLAIN_APICLIENT);

  /** A WATCHDROP_* setting is missing or malformed (exit code 2). */
  static final class UsageError extends Exception {
    UsageError(String message) {
      super(message);
    }
  }

  /** The style the run uses, read before the settings are checked, for the started line. */
  static String styleOf(Map<String, String> env) {
    String style = env.getOrDefault("WATCHDROP_STYLE", "");
    return style.isEmpty() ? STYLES.get(0) : style;
  }

  static Settings fromEnv(Map<String, String> env) throws UsageError {
    String scenario = env.getOrDefault("WATCHDROP_SCENARIO", "");
    String namespace = env.getOrDefault("WATCHDROP_NAMESPACE", "");
    String style = styleOf(env);
    if (!STYLES.contains(style)) {
      throw new UsageError("WATCHDROP_STYLE=" + style + ": this client implements " + STYLES);
    }
    if (namespace.isEmpty()) {
      throw new UsageError("WATCHDROP_NAMESPACE is not set");
    }
    int rounds = 0;
    double idle = 0;
    if (scenario.equals(IDLE_REQUEST)) {
      try {
        rounds = Integer.parseInt(env.getOrDefault("WATCHDROP_ROUNDS", ""));
        idle = Double.parseDouble(env.getOrDefault("WATCHDROP_IDLE", ""));
      } catch (NumberFormatException e) {
        throw new UsageError("idle-request needs WATCHDROP_ROUNDS and WATCHDROP_IDLE");
      }
      if (rounds < 1 || !(idle >= 0) || Double.isInfinite(idle)) {
        throw new UsageError("WATCHDROP_ROUNDS=" + rounds + " WATCHDROP_IDLE=" + idle + ": out of range");
      }
    } else if (!scenario.equals(WATCH)) {
      throw new UsageError("WATCHDROP_SCENARIO=" + scenario + ": want 'watch' or 'idle-request'");
    }
    String kubeconfig = env.getOrDefault("WATCHDROP_KUBECONFIG", "");
    return new Settings(kubeconfig.isEmpty() ? null : kubeconfig, namespace, scenario, style, rounds, idle);
  }
}
