package watchdrop.fabric8;

import io.fabric8.kubernetes.api.model.ConfigMapList;
import io.fabric8.kubernetes.api.model.WatchEvent;
import io.fabric8.kubernetes.client.KubernetesClient;

/**
 * Decodes a canned ConfigMap list and watch event once, through the client's own serialization,
 * before the first request. A cold JVM spends most of its first list on loading and interpreting
 * the decoder, which idle-request's deadline would blame on the network. The class-data-sharing
 * training run passes here too, so these classes end up in the archive. Nothing is sent and no
 * connection or setting of the client is touched.
 */
final class Warmup {
  static final String LIST = """
      {"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[
      {"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"warmup","namespace":"warmup",
      "uid":"00000000-0000-0000-0000-000000000000","resourceVersion":"1",
      "creationTimestamp":"2026-01-01T00:00:00Z","managedFields":[{"manager":"warmup","operation":"Update",
      "apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1",
      "fieldsV1":{"f:data":{".":{},"f:value":{}}}}]},"data":{"value":"warmup"}}]}""";
  static final String EVENT = """
      {"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"warmup",
      "namespace":"warmup","resourceVersion":"2","creationTimestamp":"2026-01-01T00:00:00Z"},
      "data":{"value":"warmup"}}}""";

  private Warmup() {}

  /** The number of items decoded (1), so the work cannot be optimised away. */
  static int decode(KubernetesClient client) {
    ConfigMapList list = client.getKubernetesSerialization().unmarshal(LIST, ConfigMapList.class);
    WatchEvent event = client.getKubernetesSerialization().unmarshal(EVENT, WatchEvent.class);
    return list.getItems().size() + (event.getObject() == null ? 1 : 0);
  }
}
