package watchdrop.fabric8;

import io.fabric8.kubernetes.client.http.AsyncBody;
import io.fabric8.kubernetes.client.http.BasicBuilder;
import io.fabric8.kubernetes.client.http.HttpRequest;
import io.fabric8.kubernetes.client.http.HttpResponse;
import io.fabric8.kubernetes.client.http.Interceptor;
import java.net.URI;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A fabric8 HTTP client interceptor that only looks. fabric8 re-watches by itself when a watch
 * connection ends (its watch manager reconnects with backoff, and an informer's reflector on top
 * of it) and tells user code nothing about it, so this is the one place that sees every watch
 * request the library sends: each prints `watch-opened`, and each after the first a `reconnect`
 * unless the watcher's own loop asked for it. For other requests it records every attempt
 * (fabric8 retries failed requests with backoff by itself) for request-done.
 *
 * <p>Added through KubernetesClientBuilder.withHttpClientBuilderConsumer under its own name, so
 * the library's own interceptors stay as they are.
 */
final class Observer implements Interceptor {
  static final String NAME = "watchdrop-observer";

  private final Emitter out;
  private final List<Map<String, Object>> attempts = new ArrayList<>();
  private int watchesSent;
  private boolean nextWatchIsOurs;

  Observer(Emitter out) {
    this.out = out;
  }

  static boolean isWatch(HttpRequest request) {
    String query = request.uri().getRawQuery();
    if (query == null) {
      return false;
    }
    for (String part : query.split("&")) {
      if (part.equals("watch=true") || part.equals("watch=1")) {
        return true;
      }
    }
    return false;
  }

  static String queryValue(URI uri, String name) {
    String query = uri.getRawQuery();
    if (query == null) {
      return null;
    }
    for (String part : query.split("&")) {
      if (part.startsWith(name + "=")) {
        return part.substring(name.length() + 1);
      }
    }
    return null;
  }

  /** The watcher's own loop is about to start a watch: its reconnect line is printed there. */
  synchronized void expectOwnWatch() {
    nextWatchIsOurs = true;
  }

  @Override
  public void before(BasicBuilder builder, HttpRequest request, RequestTags tags) {
    if (!isWatch(request)) {
      return;
    }
    String resourceVersion = queryValue(request.uri(), "resourceVersion");
    boolean libraryRewatch;
    synchronized (this) {
      libraryRewatch = watchesSent > 0 && !nextWatchIsOurs;
      watchesSent++;
      nextWatchIsOurs = false;
    }
    if (libraryRewatch) {
      Map<String, Object> f = Emitter.fields();
      f.put("reason", "library re-watch from resourceVersion " + resourceVersion);
      out.emit("reconnect", f);
    }
    Map<String, Object> f = Emitter.fields();
    if (resourceVersion != null) {
      f.put("resourceVersion", resourceVersion);
    }
    // fabric8 watches over a WebSocket upgrade first and falls back to a plain HTTP watch.
    f.put("request", request.method() + " " + request.uri().getRawPath());
    out.emit("watch-opened", f);
  }

  @Override
  public void after(HttpRequest request, HttpResponse<?> response, AsyncBody.Consumer<List<ByteBuffer>> consumer) {
    if (isWatch(request)) {
      return;
    }
    Map<String, Object> attempt = Emitter.fields();
    attempt.put("status", response.code());
    record(attempt);
  }

  @Override
  public void afterConnectionFailure(HttpRequest request, Throwable failure) {
    Map<String, Object> f = Emitter.fields();
    f.put("error", Errors.describe(failure));
    if (isWatch(request)) {
      // Not in the contract's table (the runner ignores it): when and why a watch connection
      // failed, which fabric8 otherwise only logs.
      f.put("request", request.method() + " " + request.uri().getRawPath());
      out.emit("watch-failed", f);
      return;
    }
    record(f);
  }

  private void record(Map<String, Object> attempt) {
    synchronized (attempts) {
      attempts.add(attempt);
    }
  }

  /** The attempts seen since the previous call, forgotten afterwards. */
  List<Map<String, Object>> takeAttempts() {
    synchronized (attempts) {
      List<Map<String, Object>> taken = new ArrayList<>(attempts);
      attempts.clear();
      return taken;
    }
  }
}
