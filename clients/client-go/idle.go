package main

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// runIdleRequests lists ConfigMaps twice per round with s.idle between, through one clientset,
// so the second List gets whatever connection the library kept pooled across the idle time.
func runIdleRequests(ctx context.Context, clientset kubernetes.Interface, s settings, obs *observer, out *emitter) {
	for round := 1; round <= s.rounds; round++ {
		for request := 1; request <= 2; request++ {
			if request == 2 && !sleepContext(ctx, s.idle) {
				return
			}
			out.emit("request-sent", fields{"round": round, "request": request})
			obs.takeAttempts()
			list, err := clientset.CoreV1().ConfigMaps(s.namespace).List(ctx, metav1.ListOptions{})
			if ctx.Err() != nil {
				// Stopped by SIGTERM mid-request: the failure is ours, not the library's.
				return
			}
			done := fields{"round": round, "request": request, "attempts": obs.takeAttempts()}
			if err != nil {
				done["ok"] = false
				done["message"] = err.Error()
				var status apierrors.APIStatus
				if errors.As(err, &status) {
					done["status"] = status.Status().Code
				}
			} else {
				// A typed List returns without error only for a 2xx answer, and kube-apiserver
				// answers a successful LIST with 200.
				done["ok"] = true
				done["status"] = 200
				done["items"] = len(list.Items)
			}
			out.emit("request-done", done)
		}
	}
}
