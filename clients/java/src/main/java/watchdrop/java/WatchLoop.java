package watchdrop.java;

import com.google.gson.reflect.TypeToken;
import io.kubernetes.client.openapi.ApiClient;
import io.kubernetes.client.openapi.ApiException;
import io.kubernetes.client.openapi.apis.CoreV1Api;
import io.kubernetes.client.openapi.models.V1ConfigMap;
import io.kubernetes.client.openapi.models.V1ObjectMeta;
import io.kubernetes.client.openapi.models.V1Status;
import io.kubernetes.client.util.Watch;
import java.io.IOException;
import java.lang.reflect.Type;
import java.util.Map;

/**
 * The watch as the library's WatchExample writes it: {@code Watch.createWatch(client,
 * api.listNamespacedConfigMap(ns).watch(true).buildCall(null), type)} and a for-each over the
 * responses, wrapped in the loop a long-running program writes: the watch ended, watch again; it
 * failed, report it, pause, watch again. Every watch starts without a resourceVersion, so the
 * server replays the current objects as ADDED, as such user code gets.
 */
final class WatchLoop {
  /**
   * After a failed watch the loop waits this long. Without it an unreachable API server turns the
   * loop into a busy spin that floods stdout; a user's loop would sleep too. A watch that simply
   * ended is restarted at once, as user code does.
   */
  static final long RETRY_PAUSE_MS = 1000;

  private static final Type RESPONSE_TYPE = new TypeToken<Watch.Response<V1ConfigMap>>() {}.getType();

  private final ApiClient client;
  private final CoreV1Api api;
  private final String namespace;
  private final Observer observer;
  private final Emitter out;

  WatchLoop(ApiClient client, String namespace, Observer observer, Emitter out) {
    this.client = client;
    this.api = new CoreV1Api(client);
    this.namespace = namespace;
    this.observer = observer;
    this.out = out;
  }

  /** Watch until the process is stopped. */
  void run() throws InterruptedException {
    while (true) {
      Watch<V1ConfigMap> watch;
      try {
        watch = Watch.createWatch(client, api.listNamespacedConfigMap(namespace).watch(true).buildCall(null), RESPONSE_TYPE);
      } catch (ApiException e) {
        error(e, e.getCode());
        reconnect("watch request failed");
        Thread.sleep(RETRY_PAUSE_MS);
        continue;
      }
      Map<String, Object> opened = Emitter.fields();
      opened.put("status", 200); // createWatch returns only for a successful response
      opened.put("proto", observer.lastProtocol());
      out.emit("watch-opened", opened);
      try {
        for (Watch.Response<V1ConfigMap> item : watch) {
          deliver(item);
        }
      } catch (RuntimeException e) {
        // Watch wraps an IOException of the stream (reset, read timeout) in a RuntimeException.
        error(e, 0);
        close(watch);
        reconnect("watch stream raised " + e.getClass().getSimpleName());
        Thread.sleep(RETRY_PAUSE_MS);
        continue;
      }
      close(watch);
      reconnect("watch ended");
    }
  }

  private void deliver(Watch.Response<V1ConfigMap> item) {
    switch (String.valueOf(item.type)) {
      case "ADDED", "MODIFIED", "DELETED" -> {
        Map<String, Object> f = Emitter.fields();
        f.put("type", item.type);
        V1ConfigMap cm = item.object;
        V1ObjectMeta meta = cm == null ? null : cm.getMetadata();
        Map<String, String> data = cm == null ? null : cm.getData();
        f.put("name", meta == null ? null : meta.getName());
        f.put("value", data == null ? null : data.get("value"));
        f.put("resourceVersion", meta == null ? null : meta.getResourceVersion());
        out.emit("event-seen", f);
      }
      case "ERROR" -> {
        // The server's Status in the stream, e.g. 410 Gone; the server ends the watch after it.
        V1Status status = item.status;
        Map<String, Object> f = Emitter.fields();
        f.put("message", status == null ? "ERROR event without a status" : String.valueOf(status.getMessage()));
        if (status != null && status.getCode() != null) {
          f.put("status", status.getCode());
        }
        out.emit("error", f);
      }
      default -> {
        // BOOKMARK is never asked for; anything else is not a ConfigMap event.
      }
    }
  }

  private void error(Exception e, int status) {
    Map<String, Object> f = Emitter.fields();
    f.put("message", Errors.describe(e));
    f.put("exception", e.getClass().getName());
    if (status > 0) {
      f.put("status", status);
    }
    out.emit("error", f);
  }

  private void reconnect(String reason) {
    Map<String, Object> f = Emitter.fields();
    f.put("reason", reason);
    out.emit("reconnect", f);
  }

  /** Release the call and its connection, as the example's finally block does. */
  private static void close(Watch<V1ConfigMap> watch) {
    try {
      watch.close();
    } catch (IOException | RuntimeException e) {
      // Closing a stream that already broke may fail again; the failure was reported above.
    }
  }
}
