package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
)

// observer sits in rest.Config.WrapTransport, above client-go's own transport (its cached
// http.Transport, HTTP/2 health checks, DISABLE_HTTP2 handling and TLS are all untouched: the
// wrapper only looks). It is the one place that sees every watch request the library sends, even
// the ones an informer's reflector sends on its own, and how each watch stream ended. The
// library reports neither to user code: a reflector whose stream breaks only logs a warning to
// stderr and starts over.
type observer struct {
	ctx context.Context // once it is done (SIGTERM), stream ends are ours and not printed
	out *emitter
	// libraryRewatches: the library (an informer's reflector) re-watches by itself, so the
	// observer prints the contract's reconnect line. In the raw watch style the watcher's own
	// loop prints it instead.
	libraryRewatches bool

	mu          sync.Mutex
	watchesSent int
	lastEnd     string
	attempts    []attempt // non-watch requests since the last takeAttempts
}

// attempt is one non-watch HTTP request as it went through the transport. client-go retries a
// GET on a reset connection by itself, and request-done would otherwise hide that.
type attempt struct {
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

func newObserver(ctx context.Context, out *emitter, libraryRewatches bool) *observer {
	return &observer{ctx: ctx, out: out, libraryRewatches: libraryRewatches}
}

func (o *observer) wrap(next http.RoundTripper) http.RoundTripper {
	return &observedTransport{next: next, o: o}
}

// takeAttempts returns the non-watch requests seen since the previous call and forgets them.
func (o *observer) takeAttempts() []attempt {
	o.mu.Lock()
	defer o.mu.Unlock()
	taken := o.attempts
	o.attempts = nil
	return taken
}

type observedTransport struct {
	next http.RoundTripper
	o    *observer
}

func isWatchRequest(req *http.Request) bool {
	w := req.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

func (t *observedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !isWatchRequest(req) {
		resp, err := t.next.RoundTrip(req)
		a := attempt{}
		if err != nil {
			a.Error = err.Error()
		} else {
			a.Status = resp.StatusCode
		}
		t.o.mu.Lock()
		t.o.attempts = append(t.o.attempts, a)
		t.o.mu.Unlock()
		return resp, err
	}

	resourceVersion := req.URL.Query().Get("resourceVersion")
	t.o.mu.Lock()
	rewatch := t.o.watchesSent > 0
	t.o.watchesSent++
	lastEnd := t.o.lastEnd
	t.o.mu.Unlock()
	if rewatch && t.o.libraryRewatches {
		if lastEnd == "" {
			lastEnd = "previous watch still open"
		}
		t.o.out.emit("reconnect", fields{"reason": "library re-watch; previous watch: " + lastEnd})
	}

	resp, err := t.next.RoundTrip(req)
	if err != nil {
		// The library gets this error back and reports it (WatchErrorHandler or Watch's error).
		t.o.setLastEnd("watch request failed: " + err.Error())
		return resp, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		t.o.setLastEnd("watch request answered " + resp.Status)
		return resp, nil
	}
	t.o.setLastEnd("")
	opened := fields{"status": resp.StatusCode, "proto": resp.Proto}
	if resourceVersion != "" {
		opened["resourceVersion"] = resourceVersion
	}
	t.o.out.emit("watch-opened", opened)
	resp.Body = &observedBody{ReadCloser: resp.Body, ended: t.o.watchEnded}
	return resp, nil
}

// watchEnded prints a watch-ended line (not in the contract's table; the runner ignores it and
// it stays as evidence of when and how each stream ended) and keeps the cause for the next
// reconnect line.
func (o *observer) watchEnded(cause, message string) {
	o.setLastEnd(message)
	if o.ctx.Err() != nil {
		return
	}
	o.out.emit("watch-ended", fields{"cause": cause, "message": message})
}

// setLastEnd records how the latest watch attempt ended; empty while a watch is open.
func (o *observer) setLastEnd(message string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lastEnd = message
}

// observedBody passes every byte through unchanged and notes the first end of the stream: EOF
// (the server closed it cleanly), a read error (the connection broke), or a Close by the
// library before either.
type observedBody struct {
	io.ReadCloser
	once  sync.Once
	ended func(cause, message string)
}

func (b *observedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(func() {
			if errors.Is(err, io.EOF) {
				b.ended("eof", "server ended the watch stream")
			} else {
				b.ended("read-error", err.Error())
			}
		})
	}
	return n, err
}

func (b *observedBody) Close() error {
	b.once.Do(func() { b.ended("client-closed", "the library closed the watch stream") })
	return b.ReadCloser.Close()
}
