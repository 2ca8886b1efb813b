package switchyard_test

// Tests against a live scheduler with a real Celery worker running the e2e app
// (tests/support/e2e_app.py): tests/e2e/test_go_client.py starts that stack and runs
// `go test ./...` with SWITCHYARD_SCHEDULER set. Without it these tests skip.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	switchyard "github.com/switchyard/switchyard/clients/go"
	pb "github.com/switchyard/switchyard/clients/go/switchyard/v1"
)

// liveClient is a client of the scheduler SWITCHYARD_SCHEDULER names; the test skips without it.
func liveClient(t *testing.T, options ...switchyard.Option) (*switchyard.Client, context.Context) {
	t.Helper()
	address := os.Getenv("SWITCHYARD_SCHEDULER")
	if address == "" {
		t.Skip("SWITCHYARD_SCHEDULER is not set: no live scheduler (tests/e2e/test_go_client.py runs these)")
	}
	client, err := switchyard.New(address, options...)
	if err != nil {
		t.Fatalf("New(%q): %v", address, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return client, ctx
}

func TestLiveSubmitAndWaitReturnsTheResult(t *testing.T) {
	client, ctx := liveClient(t)
	submitted, err := client.Submit(ctx, switchyard.TaskSpec{
		Name:        "e2e.echo",
		Args:        []any{1, "two"},
		Kwargs:      map[string]any{"three": 3, "big": 9007199254740993},
		ContentType: "text",
	})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if submitted.TaskId == "" || submitted.Queue == "" || submitted.Deduplicated {
		t.Errorf("submission: %v", submitted)
	}
	task, err := client.Wait(ctx, submitted.TaskId)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if task.State != pb.TaskState_TASK_STATE_SUCCEEDED || task.WorkerId == "" {
		t.Fatalf("task ended %s on %q: %s", switchyard.StateName(task.State), task.WorkerId, task.Error)
	}
	var result struct {
		Args   []any          `json:"args"`
		Kwargs map[string]any `json:"kwargs"`
	}
	if err := switchyard.DecodeResult(task, &result); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(result.Args) != "[1 two]" || result.Kwargs["three"] != float64(3) {
		t.Errorf("result %s; want the arguments back", task.ResultJson)
	}
	if !strings.Contains(task.ResultJson, "9007199254740993") {
		t.Errorf("2**53+1 did not survive the trip: %s", task.ResultJson)
	}
	got, err := client.Get(ctx, submitted.TaskId)
	if err != nil || got.State != pb.TaskState_TASK_STATE_SUCCEEDED || got.TaskName != "e2e.echo" {
		t.Errorf("Get after the end: %v, %v", got, err)
	}
}

func TestLiveWatchSeesTheTaskRunAndEnd(t *testing.T) {
	client, ctx := liveClient(t)
	submitted, err := client.Submit(ctx, switchyard.TaskSpec{
		Name: "e2e.progress", Kwargs: map[string]any{"steps": 3, "delay": 0.2}, ContentType: "text",
	})
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	var progress []float64
	err = client.WatchFunc(ctx, submitted.TaskId, func(task *pb.Task) error {
		states = append(states, switchyard.StateName(task.State))
		progress = append(progress, task.Progress)
		return nil
	})
	if err != nil {
		t.Fatalf("watch: %v (saw %v)", err, states)
	}
	if len(states) < 2 || states[len(states)-1] != "succeeded" || !containsString(states, "running") {
		t.Errorf("watch saw %v; want it running, then succeeded last", states)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] < progress[i-1] {
			t.Errorf("progress went back: %v", progress)
		}
	}
}

func TestLiveCancelAPendingTask(t *testing.T) {
	client, ctx := liveClient(t)
	submitted, err := client.Submit(ctx, switchyard.TaskSpec{
		Name:               "e2e.sleep",
		Args:               []any{0.1},
		Labels:             map[string]string{"go-client-test": "no-worker-has-this"},
		AllowUnschedulable: true, // waits for a worker that never comes
	})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := client.Cancel(ctx, submitted.TaskId)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if cancelled.PreviousState != pb.TaskState_TASK_STATE_PENDING || cancelled.Task.State != pb.TaskState_TASK_STATE_CANCELLED {
		t.Errorf("cancel: was %v, now %v", cancelled.PreviousState, cancelled.Task.State)
	}
	if _, err := client.Cancel(ctx, submitted.TaskId); !errors.Is(err, switchyard.ErrFailedPrecondition) {
		t.Errorf("cancelling a cancelled task = %v; want FAILED_PRECONDITION", err)
	}
	task, err := client.Wait(ctx, submitted.TaskId)
	if err != nil || task.State != pb.TaskState_TASK_STATE_CANCELLED {
		t.Errorf("Wait on a cancelled task = %v, %v", task, err)
	}
}

func TestLiveErrorsAreTyped(t *testing.T) {
	client, ctx := liveClient(t)
	if _, err := client.Get(ctx, "no-such-task"); !errors.Is(err, switchyard.ErrNotFound) {
		t.Errorf("Get of an unknown id = %v; want NOT_FOUND", err)
	}
	_, err := client.Submit(ctx, switchyard.TaskSpec{Name: "e2e.echo", KwargsJSON: "[1, 2]"})
	if !errors.Is(err, switchyard.ErrInvalidArgument) || !strings.Contains(strings.ToLower(err.Error()), "kwargs") {
		t.Errorf("kwargs that are not an object = %v; want the scheduler's INVALID_ARGUMENT about kwargs", err)
	}
}

func TestLiveSubmitBatchAndIdempotency(t *testing.T) {
	client, ctx := liveClient(t)
	results, err := client.SubmitBatch(ctx, []switchyard.TaskSpec{
		{Name: "e2e.echo", Args: []any{"first"}, ContentType: "text"},
		{Name: "e2e.echo", Args: []any{"second"}, ContentType: "text"},
	})
	if err != nil || len(results) != 2 || results[0].TaskId == results[1].TaskId {
		t.Fatalf("SubmitBatch = %v, %v", results, err)
	}
	for _, result := range results {
		if task, err := client.Wait(ctx, result.TaskId); err != nil || task.State != pb.TaskState_TASK_STATE_SUCCEEDED {
			t.Errorf("batch task %s: %v, %v", result.TaskId, task, err)
		}
	}

	key := fmt.Sprintf("go-client-test-%d", time.Now().UnixNano())
	spec := switchyard.TaskSpec{Name: "e2e.echo", ContentType: "text", IdempotencyKey: key}
	first, err := client.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	again, err := client.Submit(ctx, spec)
	if err != nil || again.TaskId != first.TaskId || !again.Deduplicated {
		t.Errorf("the same key twice: %v then %v (%v); want the first task, deduplicated", first, again, err)
	}
}

func TestLiveQueuesAndWorkers(t *testing.T) {
	client, ctx := liveClient(t)
	queues, err := client.Queues(ctx)
	if err != nil || len(queues) == 0 {
		t.Fatalf("Queues = %v, %v", queues, err)
	}
	workers, err := client.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wanted := os.Getenv("SWITCHYARD_TEST_WORKER_ID")
	var names []string
	for _, worker := range workers {
		names = append(names, worker.WorkerId)
		if worker.WorkerId == wanted && worker.Status != pb.WorkerStatus_WORKER_STATUS_CONNECTED {
			t.Errorf("worker %s is %v; want CONNECTED", wanted, worker.Status)
		}
	}
	if wanted != "" && !containsString(names, wanted) {
		t.Errorf("Workers = %v; want %s among them", names, wanted)
	}
}

func TestLiveADeadAddressBeforeTheSchedulerIsSkipped(t *testing.T) {
	address := os.Getenv("SWITCHYARD_SCHEDULER")
	if address == "" {
		t.Skip("SWITCHYARD_SCHEDULER is not set: no live scheduler (tests/e2e/test_go_client.py runs these)")
	}
	client, ctx := liveClient(t)
	dead := deadAddress(t)
	both, err := switchyard.New(dead + "," + address)
	if err != nil {
		t.Fatal(err)
	}
	defer both.Close()
	if _, err := both.Queues(ctx); err != nil {
		t.Fatalf("Queues past a dead address: %v", err)
	}
	if both.CurrentAddress() != client.Addresses()[0] {
		t.Errorf("CurrentAddress = %s; want the live scheduler %s", both.CurrentAddress(), client.Addresses()[0])
	}
}

func containsString(list []string, wanted string) bool {
	for _, item := range list {
		if item == wanted {
			return true
		}
	}
	return false
}

// TestLiveSecureRefusesAMissingOrUnknownToken runs only against a scheduler with TLS, client
// certificates and tokens: tests/e2e/test_go_client.py's secured run sets SWITCHYARD_TLS_CA,
// SWITCHYARD_TLS_CERT, SWITCHYARD_TLS_KEY and SWITCHYARD_TOKEN, which every other live test
// then uses through New's environment defaults.
func TestLiveSecureRefusesAMissingOrUnknownToken(t *testing.T) {
	if os.Getenv(switchyard.TokenEnv) == "" || os.Getenv(switchyard.TLSCAEnv) == "" {
		t.Skip("not a secured scheduler: SWITCHYARD_TOKEN and SWITCHYARD_TLS_CA are unset (tests/e2e/test_go_client.py sets them for its TLS run)")
	}
	_, ctx := liveClient(t)
	address := os.Getenv("SWITCHYARD_SCHEDULER")
	withCertificate := switchyard.TLS{
		CAFile: os.Getenv(switchyard.TLSCAEnv), CertFile: os.Getenv(switchyard.TLSCertEnv), KeyFile: os.Getenv(switchyard.TLSKeyEnv),
	}
	attempt := func(options ...switchyard.Option) error {
		client, err := switchyard.New(address, append([]switchyard.Option{switchyard.WithoutEnvironment()}, options...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		_, err = client.Queues(ctx)
		return err
	}
	if err := attempt(switchyard.WithTLS(withCertificate)); !errors.Is(err, switchyard.ErrUnauthenticated) {
		t.Errorf("no token: %v; want UNAUTHENTICATED", err)
	}
	unknown := "go-test-token-nobody-issued"
	if err := attempt(switchyard.WithTLS(withCertificate), switchyard.WithToken(unknown)); !errors.Is(err, switchyard.ErrUnauthenticated) ||
		strings.Contains(err.Error(), unknown) {
		t.Errorf("an unknown token: %v; want UNAUTHENTICATED that does not echo the token", err)
	}
	token := os.Getenv(switchyard.TokenEnv)
	if err := attempt(switchyard.WithTLS(switchyard.TLS{CAFile: withCertificate.CAFile}), switchyard.WithToken(token)); err == nil {
		t.Error("a client without a certificate reached a scheduler that requires one")
	}
	if err := attempt(switchyard.WithoutTLS(), switchyard.WithToken(token)); err == nil {
		t.Error("a plaintext client reached a TLS scheduler")
	}
	if err := attempt(switchyard.WithTLS(withCertificate), switchyard.WithToken(token)); err != nil {
		t.Errorf("the right certificate and token: %v", err)
	}
}
