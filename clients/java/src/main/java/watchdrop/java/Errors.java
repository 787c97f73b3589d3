package watchdrop.java;

/** Turning the library's exceptions into the contract's `message` text. */
final class Errors {
  private Errors() {}

  /**
   * The exception and its causes, outermost first. client-java wraps the interesting part: Watch
   * turns a broken stream into {@code RuntimeException("IO Exception during hasNext method.")}
   * and ApiException wraps the IOException of a failed call, so the message alone says little.
   */
  static String describe(Throwable e) {
    StringBuilder sb = new StringBuilder();
    Throwable t = e;
    for (int depth = 0; t != null && depth < 5; depth++) {
      if (depth > 0) {
        sb.append(" <- ");
      }
      sb.append(t.getClass().getName());
      if (t.getMessage() != null) {
        sb.append(": ").append(t.getMessage());
      }
      if (t.getCause() == t) {
        break;
      }
      t = t.getCause();
    }
    return sb.toString();
  }
}
