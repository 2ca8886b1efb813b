package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// runCommand runs the command in-process and returns its exit status, stdout and stderr.
func runCommand(t *testing.T, arguments ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, arguments, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUsageErrorsExit2AndSendNothing(t *testing.T) {
	cases := map[string][]string{
		"--task NAME is required":           {"--scheduler", "127.0.0.1:1"},
		"--kwargs must be a JSON object":    {"--task", "x", "--kwargs", "[1]"},
		"--args is not valid JSON":          {"--task", "x", "--args", "[1,"},
		"flag provided but not defined":     {"--task", "x", "--bogus"},
		`unexpected argument "stray"`:       {"--task", "x", "stray"},
		"--kwargs must be a JSON object; g": {"--task", "x", "--kwargs", "null"},
	}
	for wanted, arguments := range cases {
		code, stdout, stderr := runCommand(t, arguments...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, wanted) || !strings.Contains(stderr, "usage:") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", arguments, code, stderr, wanted)
		}
	}
	if code, stdout, _ := runCommand(t, "--help"); code != exitOK || !strings.Contains(stdout, "--content-type") {
		t.Errorf("--help: exit %d, %q", code, stdout)
	}
}

func TestAnUnreachableSchedulerExits1WithTheStatus(t *testing.T) {
	code, _, stderr := runCommand(t, "--scheduler", "127.0.0.1:1", "--task", "x")
	if code != exitFailure || !strings.Contains(stderr, "UNAVAILABLE") {
		t.Errorf("exit %d, stderr %q; want 1 and UNAVAILABLE", code, stderr)
	}
}

func liveScheduler(t *testing.T) string {
	address := os.Getenv("SWITCHYARD_SCHEDULER")
	if address == "" {
		t.Skip("SWITCHYARD_SCHEDULER is not set: no live scheduler (tests/e2e/test_go_client.py runs these)")
	}
	return address
}

func TestLiveSubmitWaitPrintsTheTerminalTaskAsProtoJSON(t *testing.T) {
	address := liveScheduler(t)
	code, stdout, stderr := runCommand(t, "--scheduler", address, "--task", "e2e.echo",
		"--kwargs", `{"x": 1, "big": 9007199254740993}`, "--content-type", "text", "--wait")
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(stdout), &task); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	// The canonical proto3 JSON mapping: lowerCamelCase names, enums by name, uint64 as strings.
	if task["state"] != "TASK_STATE_SUCCEEDED" || task["taskName"] != "e2e.echo" || task["contentType"] != "text" {
		t.Errorf("printed task: %s", stdout)
	}
	if !strings.Contains(task["resultJson"].(string), "9007199254740993") || !strings.HasPrefix(stdout, "{\n  \"") {
		t.Errorf("result or layout: %s", stdout)
	}
}

func TestLiveSubmitWithoutWaitPrintsTheTaskAsSubmitted(t *testing.T) {
	address := liveScheduler(t)
	code, stdout, stderr := runCommand(t, "--scheduler", address, "--task", "e2e.echo", "--args", `["hi"]`, "--content-type", "text")
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(stdout), &task); err != nil || task["taskId"] == "" || task["state"] == nil {
		t.Errorf("printed task: %v %s", err, stdout)
	}
}
