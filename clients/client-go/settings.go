package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

const (
	scenarioWatch       = "watch"
	scenarioIdleRequest = "idle-request"

	styleInformer = "informer"
	styleWatch    = "watch"
)

// settings is everything the runner passes through the environment (clients/README.md).
type settings struct {
	kubeconfig string // empty: in-cluster config
	namespace  string
	scenario   string
	style      string // watch scenario only; idle-request always lists
	rounds     int
	idle       time.Duration
}

func settingsFromEnv() (settings, error) {
	s := settings{
		kubeconfig: os.Getenv("WATCHDROP_KUBECONFIG"),
		namespace:  os.Getenv("WATCHDROP_NAMESPACE"),
		scenario:   os.Getenv("WATCHDROP_SCENARIO"),
		style:      os.Getenv("WATCHDROP_STYLE"),
	}
	if s.style == "" {
		s.style = styleInformer
	}
	if s.style != styleInformer && s.style != styleWatch {
		return s, fmt.Errorf("WATCHDROP_STYLE=%q: this client implements %q and %q", s.style, styleInformer, styleWatch)
	}
	if s.namespace == "" {
		return s, fmt.Errorf("WATCHDROP_NAMESPACE is not set")
	}
	switch s.scenario {
	case scenarioWatch:
	case scenarioIdleRequest:
		rounds, err := strconv.Atoi(os.Getenv("WATCHDROP_ROUNDS"))
		if err != nil || rounds < 1 {
			return s, fmt.Errorf("WATCHDROP_ROUNDS=%q: want a whole number of at least 1", os.Getenv("WATCHDROP_ROUNDS"))
		}
		idle, err := strconv.ParseFloat(os.Getenv("WATCHDROP_IDLE"), 64)
		if err != nil || idle < 0 || math.IsInf(idle, 0) || math.IsNaN(idle) {
			return s, fmt.Errorf("WATCHDROP_IDLE=%q: want seconds, at least 0", os.Getenv("WATCHDROP_IDLE"))
		}
		s.rounds = rounds
		s.idle = time.Duration(idle * float64(time.Second))
	default:
		return s, fmt.Errorf("WATCHDROP_SCENARIO=%q: want %q or %q", s.scenario, scenarioWatch, scenarioIdleRequest)
	}
	return s, nil
}

// reportedStyle is the style named in the started line: idle-request uses neither an informer
// nor a watch, only two typed List calls.
func (s settings) reportedStyle() string {
	if s.scenario == scenarioIdleRequest {
		return "list"
	}
	return s.style
}
