package watchdrop.fabric8;

import io.fabric8.kubernetes.api.model.ConfigMapList;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import java.util.Map;

/**
 * idle-request: list ConfigMaps twice per round with the idle time between, through one
 * KubernetesClient, so the second list gets whatever connection the HTTP client kept pooled.
 */
final class IdleRequests {
  private IdleRequests() {}

  static void run(KubernetesClient client, Settings s, Observer observer, Emitter out) throws InterruptedException {
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
          ConfigMapList list = client.configMaps().inNamespace(s.namespace()).list();
          // list() returns only for a 2xx answer, and kube-apiserver answers a LIST with 200.
          done.put("ok", true);
          done.put("status", 200);
          done.put("items", list.getItems() == null ? 0 : list.getItems().size());
        } catch (KubernetesClientException e) {
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
