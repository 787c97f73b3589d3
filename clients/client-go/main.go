// Command watcher is the client-go column of the watchdrop matrix. It follows the watcher
// contract in clients/README.md: settings come from WATCHDROP_* variables, and what the library
// did is printed as JSON lines on stdout. It adds no timeouts, keepalives or retries of its own:
// client-go's defaults (HTTP/2 with health-check pings, or HTTP/1.1 with TCP keepalive when
// DISABLE_HTTP2 is set, which client-go reads itself) are what the matrix measures.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	clientName  = "client-go"
	libraryPath = "k8s.io/client-go"

	exitOK    = 0
	exitCrash = 1
	exitUsage = 2
)

func main() {
	os.Exit(run())
}

func run() int {
	out := newEmitter(os.Stdout)
	s, settingsErr := settingsFromEnv()
	out.emit("started", fields{
		"client":  clientName,
		"library": libraryPath,
		"version": libraryVersion(),
		"style":   s.reportedStyle(),
		"go":      runtime.Version(),
	})
	if settingsErr != nil {
		out.emit("error", fields{"message": settingsErr.Error()})
		return exitUsage
	}

	// SIGTERM is how the runner ends a watch; both signals end the run with 0.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	config, err := loadConfig(s.kubeconfig)
	if err != nil {
		out.emit("error", fields{"message": err.Error()})
		return exitCrash
	}
	obs := newObserver(ctx, out, s.scenario == scenarioWatch && s.style == styleInformer)
	config.Wrap(obs.wrap)
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		out.emit("error", fields{"message": err.Error()})
		return exitCrash
	}

	switch {
	case s.scenario == scenarioIdleRequest:
		runIdleRequests(ctx, clientset, s, obs, out)
	case s.style == styleWatch:
		err = runRawWatch(ctx, clientset, s.namespace, out)
	default:
		err = runInformer(ctx, clientset, s.namespace, out)
	}
	if err != nil {
		out.emit("error", fields{"message": err.Error()})
		return exitCrash
	}
	return exitOK
}

// loadConfig reads the kubeconfig the runner wrote, or the pod's in-cluster config when
// WATCHDROP_KUBECONFIG is unset (kubernetes backend).
func loadConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

// libraryVersion is the client-go version linked into this binary, read from the build info so
// the started line states what was built, not what a file claims.
func libraryVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == libraryPath {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}
