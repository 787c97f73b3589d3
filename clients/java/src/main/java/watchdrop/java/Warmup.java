package watchdrop.java;

import com.google.gson.reflect.TypeToken;
import io.kubernetes.client.openapi.ApiClient;
import io.kubernetes.client.openapi.models.V1ConfigMap;
import io.kubernetes.client.openapi.models.V1ConfigMapList;
import io.kubernetes.client.util.Watch;

/**
 * Decodes a canned ConfigMap list and watch event once, through the client's own JSON, before the
 * first request. A cold JVM spends most of its first list on loading and interpreting the
 * decoder (measured: the response was on the wire 2 s after request-sent, request-done came 8 s
 * later on a busy machine), which idle-request's deadline would blame on the network. The
 * class-data-sharing training run passes here too, so these classes end up in the archive.
 * Nothing is sent and no connection or setting of the client is touched.
 */
final class Warmup {
  static final String LIST = """
      {"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[
      {"metadata":{"name":"warmup","namespace":"warmup","uid":"00000000-0000-0000-0000-000000000000",
      "resourceVersion":"1","creationTimestamp":"2026-01-01T00:00:00Z","managedFields":[{"manager":"warmup",
      "operation":"Update","apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1",
      "fieldsV1":{"f:data":{".":{},"f:value":{}}}}]},"data":{"value":"warmup"}}]}""";
  static final String EVENT = """
      {"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"warmup",
      "namespace":"warmup","resourceVersion":"2","creationTimestamp":"2026-01-01T00:00:00Z"},
      "data":{"value":"warmup"}}}""";

  private Warmup() {}

  /** The number of items decoded (1), so the work cannot be optimised away. */
  static int decode(ApiClient client) {
    V1ConfigMapList list = client.getJSON().deserialize(LIST, V1ConfigMapList.class);
    Watch.Response<V1ConfigMap> event =
        client.getJSON().deserialize(EVENT, new TypeToken<Watch.Response<V1ConfigMap>>() {}.getType());
    return list.getItems().size() + (event.object == null ? 1 : 0);
  }
}
