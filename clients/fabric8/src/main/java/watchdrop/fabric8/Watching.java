package watchdrop.fabric8;

import io.fabric8.kubernetes.api.model.ConfigMap;
import io.fabric8.kubernetes.api.model.ObjectMeta;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.fabric8.kubernetes.client.Watcher;
import io.fabric8.kubernetes.client.WatcherException;
import io.fabric8.kubernetes.client.informers.ResourceEventHandler;
import io.fabric8.kubernetes.client.informers.SharedIndexInformer;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * The two ways fabric8's docs watch: a Watcher passed to watch(), and an informer made by
 * inform() with a ResourceEventHandler. Both leave reconnecting to the library (it re-watches by
 * itself, which the Observer shows); the watcher's own loop only starts again what the library
 * gave up on, as a long-running program would: a Watcher's onClose(WatcherException) (fabric8
 * calls it when it stops reconnecting, e.g. on 410 Gone), or a watch()/inform() call that threw.
 */
final class Watching {
  /**
   * After the library gave up the loop waits this long. Without it an unreachable API server
   * turns the loop into a busy spin that floods stdout; a user's loop would sleep too.
   */
  static final long RETRY_PAUSE_MS = 1000;

  private final KubernetesClient client;
  private final String namespace;
  private final Observer observer;
  private final Emitter out;

  Watching(KubernetesClient client, String namespace, Observer observer, Emitter out) {
    this.client = client;
    this.namespace = namespace;
    this.observer = observer;
    this.out = out;
  }

  /** Watcher style: watch until the process is stopped. */
  void runWatch() throws InterruptedException {
    BlockingQueue<WatcherException> closed = new LinkedBlockingQueue<>();
    Watcher<ConfigMap> watcher = new Watcher<>() {
      @Override
      public void eventReceived(Action action, ConfigMap cm) {
        switch (action) {
          case ADDED, MODIFIED, DELETED -> eventSeen(action.name(), cm, false);
          // The server's Status in the stream; fabric8 turns most into onClose instead.
          case ERROR -> error("ERROR event: " + (cm == null ? "no object" : cm), 0);
          default -> {
            // BOOKMARK is never asked for.
          }
        }
      }

      @Override
      public void onClose(WatcherException cause) {
        // The library stopped reconnecting: the only way a Watcher hears of a broken watch.
        error(Errors.describe(cause), cause.asClientException().getCode());
        closed.add(cause);
      }

      @Override
      public void onClose() {
        // Only after the watch was closed on purpose, which this program never does.
      }
    };
    boolean first = true;
    while (true) {
      if (!first) {
        observer.expectOwnWatch();
      }
      first = false;
      try {
        client.configMaps().inNamespace(namespace).watch(watcher);
      } catch (KubernetesClientException e) {
        error(Errors.describe(e), e.getCode());
        reconnect("watch() threw " + e.getClass().getSimpleName());
        Thread.sleep(RETRY_PAUSE_MS);
        continue;
      }
      WatcherException cause = closed.take();
      reconnect("Watcher.onClose(" + cause.getClass().getSimpleName() + ")");
      Thread.sleep(RETRY_PAUSE_MS);
    }
  }

  /** Informer style: inform() with handlers, then wait until the process is stopped. */
  void runInformer() throws InterruptedException {
    ResourceEventHandler<ConfigMap> handler = new ResourceEventHandler<>() {
      @Override
      public void onAdd(ConfigMap cm) {
        eventSeen("ADDED", cm, false);
      }

      @Override
      public void onUpdate(ConfigMap oldCm, ConfigMap cm) {
        eventSeen("MODIFIED", cm, false);
      }

      @Override
      public void onDelete(ConfigMap cm, boolean deletedFinalStateUnknown) {
        eventSeen("DELETED", cm, deletedFinalStateUnknown);
      }
    };
    boolean first = true;
    while (true) {
      if (!first) {
        observer.expectOwnWatch();
      }
      first = false;
      SharedIndexInformer<ConfigMap> informer;
      try {
        // inform() starts the informer and returns once its first list is in the cache.
        informer = client.configMaps().inNamespace(namespace).inform(handler);
      } catch (KubernetesClientException e) {
        error(Errors.describe(e), e.getCode());
        reconnect("inform() threw " + e.getClass().getSimpleName());
        Thread.sleep(RETRY_PAUSE_MS);
        continue;
      }
      // An informer that gives up completes stopped() exceptionally; that is the only way the
      // application hears of it. A stopped informer is started again like a failed inform().
      CountDownLatch stopped = new CountDownLatch(1);
      informer.stopped().whenComplete((ignored, failure) -> {
        error("informer stopped: " + (failure == null ? "without an error" : Errors.describe(failure)), 0);
        stopped.countDown();
      });
      stopped.await();
      informer.close();
      reconnect("informer stopped");
      Thread.sleep(RETRY_PAUSE_MS);
    }
  }

  private void eventSeen(String type, ConfigMap cm, boolean finalStateUnknown) {
    Map<String, Object> f = Emitter.fields();
    f.put("type", type);
    ObjectMeta meta = cm == null ? null : cm.getMetadata();
    Map<String, String> data = cm == null ? null : cm.getData();
    f.put("name", meta == null ? null : meta.getName());
    f.put("value", data == null ? null : data.get("value"));
    f.put("resourceVersion", meta == null ? null : meta.getResourceVersion());
    if (finalStateUnknown) {
      // The informer missed the delete itself and noticed the object's absence on a relist.
      f.put("finalStateUnknown", true);
    }
    out.emit("event-seen", f);
  }

  private void error(String message, int status) {
    Map<String, Object> f = Emitter.fields();
    f.put("message", message);
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
}
