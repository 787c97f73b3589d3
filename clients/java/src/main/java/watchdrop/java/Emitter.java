package watchdrop.java;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * Writes the contract's JSON lines (clients/README.md) on stdout, one object per line, flushed
 * at once so that ts stays honest against the pcap and the LB log.
 *
 * <p>The watch thread, OkHttp's threads (through the observer) and the shutdown hook all print,
 * so every line is written whole under one lock. Once {@link #close()} ran (SIGTERM), nothing
 * more is printed: what the library says while the JVM halts is not evidence about the LB.
 */
final class Emitter {
  private final PrintStream out;
  private boolean closed;

  private Emitter(PrintStream out) {
    this.out = out;
  }

  /** An emitter on the process's real stdout (not System.out, which a library could replace). */
  static Emitter stdout() {
    return new Emitter(new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8));
  }

  /** Fields of one line in insertion order; the caller adds to it and passes it to emit. */
  static Map<String, Object> fields() {
    return new LinkedHashMap<>();
  }

  /** The current time as Unix seconds with sub-millisecond digits, like the Go and Python watchers. */
  static double now() {
    Instant t = Instant.now();
    return t.getEpochSecond() + t.getNano() / 1e9;
  }

  void emit(String event) {
    emit(event, Map.of());
  }

  void emit(String event, Map<String, Object> extra) {
    StringBuilder line = new StringBuilder(128);
    // Fixed-point with microseconds: Double.toString would print 1.79E9.
    line.append("{\"ts\":").append(String.format(Locale.ROOT, "%.6f", now())).append(",\"event\":");
    Json.string(line, event);
    for (Map.Entry<String, Object> e : extra.entrySet()) {
      line.append(',');
      Json.string(line, e.getKey());
      line.append(':');
      Json.value(line, e.getValue());
    }
    line.append("}\n");
    synchronized (this) {
      if (closed) {
        return;
      }
      out.print(line);
      out.flush();
    }
  }

  /** Flush and stop printing; waits for a line being written to finish, so none is cut in half. */
  synchronized void close() {
    out.flush();
    closed = true;
  }

  /** Just enough JSON for the contract's lines: strings, numbers, booleans, null, lists, maps. */
  static final class Json {
    private Json() {}

    static void value(StringBuilder sb, Object v) {
      if (v == null) {
        sb.append("null");
      } else if (v instanceof Boolean || v instanceof Integer || v instanceof Long) {
        sb.append(v);
      } else if (v instanceof Double d && Double.isFinite(d)) {
        sb.append(d);
      } else if (v instanceof Iterable<?> items) {
        sb.append('[');
        String sep = "";
        for (Object item : items) {
          sb.append(sep);
          value(sb, item);
          sep = ",";
        }
        sb.append(']');
      } else if (v instanceof Map<?, ?> map) {
        sb.append('{');
        String sep = "";
        for (Map.Entry<?, ?> e : map.entrySet()) {
          sb.append(sep);
          string(sb, String.valueOf(e.getKey()));
          sb.append(':');
          value(sb, e.getValue());
          sep = ",";
        }
        sb.append('}');
      } else {
        string(sb, v.toString());
      }
    }

    static void string(StringBuilder sb, String s) {
      sb.append('"');
      for (int i = 0; i < s.length(); i++) {
        char c = s.charAt(i);
        switch (c) {
          case '"' -> sb.append("\\\"");
          case '\\' -> sb.append("\\\\");
          case '\n' -> sb.append("\\n");
          case '\r' -> sb.append("\\r");
          case '\t' -> sb.append("\\t");
          default -> {
            if (c < 0x20) {
              sb.append(String.format("\\u%04x", (int) c));
            } else {
              sb.append(c);
            }
          }
        }
      }
      sb.append('"');
    }
  }
}
