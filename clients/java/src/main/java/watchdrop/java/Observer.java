package watchdrop.java;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import okhttp3.Interceptor;
import okhttp3.Request;
import okhttp3.Response;

/**
 * An OkHttp network interceptor that records each network attempt of a non-watch request.
 *
 * <p>OkHttp retries a request on a stale pooled connection by itself (retryOnConnectionFailure),
 * and the ApiClient's result would hide that; the attempts go into request-done as evidence,
 * like client-go's watcher does. It also remembers the protocol of the latest response, so
 * watch-opened can say whether the watch runs over HTTP/2 or HTTP/1.1. It never changes a request.
 */
final class Observer implements Interceptor {
  private final List<Map<String, Object>> attempts = new ArrayList<>();
  private volatile String lastProtocol;

  @Override
  public Response intercept(Chain chain) throws IOException {
    Request request = chain.request();
    boolean watch = "true".equals(request.url().queryParameter("watch"));
    Map<String, Object> attempt = Emitter.fields();
    try {
      Response response = chain.proceed(request);
      lastProtocol = response.protocol().toString();
      attempt.put("status", response.code());
      attempt.put("proto", lastProtocol);
      return response;
    } catch (IOException | RuntimeException e) {
      attempt.put("error", Errors.describe(e));
      throw e;
    } finally {
      if (!watch) {
        synchronized (attempts) {
          attempts.add(attempt);
        }
      }
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

  /** The protocol of the latest response OkHttp got (e.g. h2, http/1.1); null before the first. */
  String lastProtocol() {
    return lastProtocol;
  }
}
