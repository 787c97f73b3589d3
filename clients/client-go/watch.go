package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// retryPause is how long the raw watch loop waits after a Watch call failed. Without it an
// unreachable API server turns the loop into a busy spin that floods stdout; a user's loop
// would sleep too. A watch that simply ended is restarted at once, as user code does.
const retryPause = time.Second

// configMapEvent prints one event-seen line for an object the library delivered.
func configMapEvent(out *emitter, eventType string, obj any) {
	extra := fields{"type": eventType}
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		// The informer missed the delete itself (its watch was down) and noticed the object's
		// absence on a relist; that is worth keeping as evidence.
		extra["finalStateUnknown"] = true
		obj = tomb.Obj
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		out.emit("error", fields{"message": fmt.Sprintf("watcher got a %T, not a ConfigMap, in a %s event", obj, eventType)})
		return
	}
	var value any // JSON null when the ConfigMap has no data.value
	if v, has := cm.Data["value"]; has {
		value = v
	}
	extra["name"] = cm.Name
	extra["value"] = value
	extra["resourceVersion"] = cm.ResourceVersion
	out.emit("event-seen", extra)
}

// runInformer is the common way to watch with client-go: a namespaced SharedInformerFactory,
// event handlers, Start and WaitForCacheSync. The informer lists, watches and re-watches on its
// own; the watcher only prints what it is told.
func runInformer(ctx context.Context, clientset kubernetes.Interface, namespace string, out *emitter) error {
	factory := informers.NewSharedInformerFactoryWithOptions(clientset, 0, informers.WithNamespace(namespace))
	informer := factory.Core().V1().ConfigMaps().Informer()
	err := informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		out.emit("error", fields{"message": err.Error()})
		// Keep the library's own stderr logging for this error, as without a handler.
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	if err != nil {
		return fmt.Errorf("set watch error handler: %w", err)
	}
	_, err = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { configMapEvent(out, string(watch.Added), obj) },
		UpdateFunc: func(_, obj any) { configMapEvent(out, string(watch.Modified), obj) },
		DeleteFunc: func(obj any) { configMapEvent(out, string(watch.Deleted), obj) },
	})
	if err != nil {
		return fmt.Errorf("add event handler: %w", err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	<-ctx.Done()
	return nil
}

// runRawWatch is the hand-written alternative: Watch, read ResultChan until it closes, watch
// again. It starts every watch without a resourceVersion, so the server replays the current
// objects as ADDED each time, as such user code gets.
func runRawWatch(ctx context.Context, clientset kubernetes.Interface, namespace string, out *emitter) error {
	for {
		w, err := clientset.CoreV1().ConfigMaps(namespace).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			out.emit("error", fields{"message": err.Error()})
			out.emit("reconnect", fields{"reason": "watch request failed"})
			if !sleepContext(ctx, retryPause) {
				return nil
			}
			continue
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				configMapEvent(out, string(ev.Type), ev.Object)
			case watch.Error:
				if ctx.Err() != nil {
					// Our own shutdown breaks the stream too; that is not the library's error.
					continue
				}
				// client-go delivers a broken stream, or the server's error status, this way.
				out.emit("error", fields{"message": apierrors.FromObject(ev.Object).Error()})
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return nil
		}
		out.emit("reconnect", fields{"reason": "result channel closed"})
	}
}

// sleepContext waits d; false when ctx ended first.
func sleepContext(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
