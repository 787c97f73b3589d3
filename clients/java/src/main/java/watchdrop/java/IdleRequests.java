package watchdrop.java;

import io.kubernetes.client.openapi.ApiClient;
import io.kubernetes.client.openapi.ApiException;
import io.kubernetes.client.openapi.apis.CoreV1Api;
import io.kubernetes.client.openapi.models.V1ConfigMapList;
import java.util.Map;

/**
 * idle-request: list ConfigMaps twice per round with the idle time between, through one
 * ApiClient, so the second list gets whatever connection OkHttp kept pooled across the idle time.
 */
final class IdleRequests {
  private IdleRequests() {}

  static void run(ApiClient client, Settings s, Observer observer, Emitter out) throws InterruptedException {
    CoreV1Api api = new CoreV1Api(client);
    for (int round = 1; round <= s.rounds(); round++) {
      for (int request = 1; request <= 2; request++) {
        if (request == 2) {
          Thread.sleep(Math.round(s.idleSeconds() * 1000));
        }
        Map<String, Object> sent = Emitter.fields();
        sent.put("round", round);
        sent.put("request", request);
        out.emit("request-sent", sent);
        observer.takeAttempts();
        Map<String, Object> done = Emitter.fields();
        done.put("round", round);
        done.put("request", request);
        try {
          V1ConfigMapList list = api.listNamespacedConfigMap(s.namespace()).execute();
          // execute() returns only for a 2xx answer, and kube-apiserver answers a LIST with 200.
          done.put("ok", true);
          done.put("status", 200);
          done.put("items", list.getItems() == null ? 0 : list.getItems().size());
        } catch (ApiException e) {
          done.put("ok", false);
          done.put("message", Errors.describe(e));
          if (e.getCode() > 0) {
            done.put("status", e.getCode());
          }
        } catch (RuntimeException e) {
          done.put("ok", false);
          done.put("message", Errors.describe(e));
        }
        done.put("attempts", observer.takeAttempts());
        out.emit("request-done", done);
      }
    }
  }
}
