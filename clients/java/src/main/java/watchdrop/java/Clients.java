package watchdrop.java;

import io.kubernetes.client.openapi.ApiClient;
import io.kubernetes.client.openapi.Configuration;
import io.kubernetes.client.util.ClientBuilder;
import io.kubernetes.client.util.KubeConfig;
import java.io.ByteArrayInputStream;
import java.io.FileReader;
import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import okhttp3.OkHttpClient;

/**
 * Makes the one ApiClient every request of the run goes through, in the chosen style.
 *
 * <p>The two styles differ only in how the client is made, and that is the point of the
 * variant: ClientBuilder gives OkHttp no read timeout and an HTTP/2 ping every minute, while a
 * plain {@code new ApiClient()} keeps OkHttp's own defaults (10 s read timeout, no pings).
 * Nothing here changes a timeout, keepalive or retry of either.
 */
final class Clients {
  /** Where a pod's service account credentials are mounted (kubernetes backend). */
  private static final Path SA_DIR = Path.of("/var/run/secrets/kubernetes.io/serviceaccount");

  private Clients() {}

  static ApiClient build(Settings s, Observer observer) throws IOException {
    ApiClient client = s.style().equals(Settings.PLAIN_APICLIENT) ? plain(s.kubeconfig()) : fromClientBuilder(s.kubeconfig());
    // The library's examples install the client as the process default; do the same so any
    // code path that falls back to the default sees this client.
    Configuration.setDefaultApiClient(client);
    // Last, so that no later setter (setSslCaCert rebuilds the OkHttpClient) drops it. A network
    // interceptor only looks at each attempt; OkHttp's settings and connection pool are shared
    // by the derived client, so the library's behaviour is unchanged.
    client.setHttpClient(client.getHttpClient().newBuilder().addNetworkInterceptor(observer).build());
    return client;
  }

  /** The examples' way: ClientBuilder.kubeconfig(KubeConfig.loadKubeConfig(...)).build(). */
  private static ApiClient fromClientBuilder(String kubeconfig) throws IOException {
    if (kubeconfig == null) {
      return ClientBuilder.cluster().build();
    }
    try (Reader reader = new FileReader(kubeconfig, StandardCharsets.UTF_8)) {
      return ClientBuilder.kubeconfig(KubeConfig.loadKubeConfig(reader)).build();
    }
  }

  /** A hand-made {@code new ApiClient()}: base path, CA and bearer token set one by one. */
  private static ApiClient plain(String kubeconfig) throws IOException {
    String server;
    byte[] ca;
    String token;
    if (kubeconfig == null) {
      server = "https://" + System.getenv("KUBERNETES_SERVICE_HOST") + ":" + System.getenv("KUBERNETES_SERVICE_PORT");
      ca = Files.readAllBytes(SA_DIR.resolve("ca.crt"));
      token = Files.readString(SA_DIR.resolve("token"), StandardCharsets.UTF_8).trim();
    } else {
      // The library's kubeconfig parser only reads the three values; the client is made by hand.
      KubeConfig kc;
      try (Reader reader = new FileReader(kubeconfig, StandardCharsets.UTF_8)) {
        kc = KubeConfig.loadKubeConfig(reader);
      }
      server = kc.getServer();
      ca = kc.getDataOrFileRelative(kc.getCertificateAuthorityData(), kc.getCertificateAuthorityFile());
      Map<String, String> credentials = kc.getCredentials();
      token = credentials == null ? null : credentials.get(KubeConfig.CRED_TOKEN_KEY);
      if (server == null || ca == null || token == null) {
        throw new IOException("kubeconfig " + kubeconfig + " lacks a server, CA data or token");
      }
    }
    ApiClient client = new ApiClient();
    client.setBasePath(server);
    client.setSslCaCert(new ByteArrayInputStream(ca));
    client.setApiKeyPrefix("Bearer");
    client.setApiKey(token);
    return client;
  }

  /** What OkHttp was configured with, for a line of evidence next to the results. */
  static Map<String, Object> describe(ApiClient client) {
    OkHttpClient http = client.getHttpClient();
    Map<String, Object> f = Emitter.fields();
    f.put("readTimeoutMs", http.readTimeoutMillis());
    f.put("pingIntervalMs", http.pingIntervalMillis());
    f.put("connectTimeoutMs", http.connectTimeoutMillis());
    f.put("retryOnConnectionFailure", http.retryOnConnectionFailure());
    f.put("protocols", http.protocols().stream().map(Object::toString).toList());
    return f;
  }
}
