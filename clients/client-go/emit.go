package main

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// fields are the extra keys of one JSON line, next to ts and event.
type fields map[string]any

// emitter writes the contract's JSON lines (clients/README.md). Informer callbacks, the
// reflector and the transport observer all print from their own goroutines, so every line is
// written whole under one lock and never interleaves with another.
type emitter struct {
	mu sync.Mutex
	w  io.Writer
}

func newEmitter(w io.Writer) *emitter {
	return &emitter{w: w}
}

// emit prints one line. os.Stdout is unbuffered in Go, so each line reaches the runner as soon
// as it is written, which keeps ts honest against the pcap and the LB log.
func (e *emitter) emit(event string, extra fields) {
	line := make(map[string]any, len(extra)+2)
	for k, v := range extra {
		line[k] = v
	}
	line["ts"] = float64(time.Now().UnixNano()) / 1e9
	line["event"] = event
	data, err := json.Marshal(line)
	if err != nil {
		// Only a value json cannot encode gets here; say so instead of losing the line.
		data, _ = json.Marshal(map[string]any{
			"ts": float64(time.Now().UnixNano()) / 1e9, "event": "error",
			"message": "watcher could not encode a " + event + " line: " + err.Error(),
		})
	}
	data = append(data, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(data)
}
