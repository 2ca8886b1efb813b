package switchyard_test

// Unit tests: no scheduler, fakes on loopback (fake_test.go) where a call must happen.

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchyard "github.com/switchyard/switchyard/clients/go"
	pb "github.com/switchyard/switchyard/clients/go/switchyard/v1"
)

func newClient(t *testing.T, target string, options ...switchyard.Option) *switchyard.Client {
	t.Helper()
	client, err := switchyard.New(target, append([]switchyard.Option{switchyard.WithoutEnvironment()}, options...)...)
	if err != nil {
		t.Fatalf("New(%q): %v", target, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestParseAddressesAddsThePortDropsRepeatsAndKeepsOrder(t *testing.T) {
	cases := map[string][]string{
		"sched":                         {"sched:50051"},
		"a:1, b:2 ,a:1,,":               {"a:1", "b:2"},
		"[::1]":                         {"[::1]:50051"},
		"::1":                           {"[::1]:50051"},
		"[::1]:7000,dns:///sched:7001":  {"[::1]:7000", "dns:///sched:7001"},
		"unix:///run/switchyard.sock":   {"unix:///run/switchyard.sock"},
		"10.0.0.4:50051,10.0.0.5:50051": {"10.0.0.4:50051", "10.0.0.5:50051"},
	}
	for target, want := range cases {
		got, err := switchyard.ParseAddresses(target)
		if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("ParseAddresses(%q) = %v, %v; want %v", target, got, err, want)
		}
	}
	if _, err := switchyard.New(" , "); !errors.Is(err, switchyard.ErrInvalidArgument) || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Errorf("New(\" , \") = %v; want INVALID_ARGUMENT saying how to give an address", err)
	}
}

func TestTaskSpecBecomesTheRequestTheSchedulerExpects(t *testing.T) {
	request, err := switchyard.TaskSpec{
		Name:          "media.transcribe",
		Args:          []any{"a<b>&c", 1},
		Kwargs:        map[string]any{"big": 9007199254740993},
		ContentType:   "audio",
		GPU:           pb.GpuRequirement_GPU_REQUIREMENT_REQUIRED,
		Priority:      8,
		Labels:        map[string]string{"zone": "eu"},
		SoftTimeLimit: 1500 * time.Millisecond,
		HardTimeLimit: 3 * time.Second,
		Serializer:    pb.Serializer_SERIALIZER_MSGPACK,
	}.Request()
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if request.ArgsJson != `["a<b>&c",1]` || request.KwargsJson != `{"big":9007199254740993}` {
		t.Errorf("JSON sent: args %s kwargs %s", request.ArgsJson, request.KwargsJson)
	}
	if request.SoftTimeLimitSeconds != 1.5 || request.HardTimeLimitSeconds != 3 || request.Priority != 8 ||
		request.Gpu != pb.GpuRequirement_GPU_REQUIREMENT_REQUIRED || request.Labels["zone"] != "eu" || request.ContentType != "audio" ||
		request.Serializer != pb.Serializer_SERIALIZER_MSGPACK {
		t.Errorf("request fields: %v", request)
	}
	empty, err := switchyard.TaskSpec{Name: "x"}.Request()
	if err != nil || empty.ArgsJson != "" || empty.KwargsJson != "" {
		t.Errorf("no arguments should send empty JSON fields (the scheduler reads them as [] and {}): %v %v", empty, err)
	}
}

func TestBadTaskSpecsAreRefusedBeforeAnyCall(t *testing.T) {
	cases := map[string]switchyard.TaskSpec{
		"name":              {},
		"priority":          {Name: "x", Priority: 11},
		"not both":          {Name: "x", Args: []any{1}, ArgsJSON: "[1]"},
		"Kwargs or":         {Name: "x", Kwargs: map[string]any{"a": 1}, KwargsJSON: "{}"},
		"JSON":              {Name: "x", Args: []any{func() {}}},
		"soft time limit":   {Name: "x", SoftTimeLimit: 5 * time.Second, HardTimeLimit: time.Second},
		"must be >= 0":      {Name: "x", HardTimeLimit: -time.Second},
		"GPU requirement 9": {Name: "x", GPU: 9},
		"serializer 7":      {Name: "x", Serializer: 7},
	}
	fake := &fakeScheduler{}
	client := newClient(t, serve(t, fake))
	for wanted, spec := range cases {
		_, err := client.Submit(testContext(t), spec)
		if !errors.Is(err, switchyard.ErrInvalidArgument) || !strings.Contains(err.Error(), wanted) {
			t.Errorf("Submit(%+v) = %v; want INVALID_ARGUMENT mentioning %q", spec, err, wanted)
		}
	}
	if fake.callCount() != 0 {
		t.Errorf("%d calls reached the scheduler; bad specs must be refused client-side", fake.callCount())
	}
}

func TestErrorsCarryTheStatusCodeAndMatchTheirSentinel(t *testing.T) {
	fake := &fakeScheduler{get: func(_ context.Context, request *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
		return nil, status.Errorf(codes.NotFound, "no task %s", request.TaskId)
	}}
	client := newClient(t, serve(t, fake))
	_, err := client.Get(testContext(t), "t-404")
	if !errors.Is(err, switchyard.ErrNotFound) || errors.Is(err, switchyard.ErrInvalidArgument) {
		t.Fatalf("Get of an unknown task = %v; want ErrNotFound only", err)
	}
	var failure *switchyard.Error
	if !errors.As(err, &failure) || failure.Code != codes.NotFound || failure.Message != "no task t-404" {
		t.Errorf("errors.As: %#v", failure)
	}
	if err.Error() != "NOT_FOUND: no task t-404" || status.Code(err) != codes.NotFound {
		t.Errorf("Error() = %q, status.Code = %v", err.Error(), status.Code(err))
	}
	for code, name := range map[codes.Code]string{codes.Canceled: "CANCELLED", codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.OK: "OK"} {
		if got := switchyard.CodeName(code); got != name {
			t.Errorf("CodeName(%v) = %q; want %q", code, got, name)
		}
	}
	if !errors.Is(&switchyard.Error{Code: codes.DataLoss}, switchyard.ErrInternal) {
		t.Error("DATA_LOSS should match ErrInternal")
	}
}

func TestCallsFollowTheLeaderAStandbyNames(t *testing.T) {
	leader := &fakeScheduler{}
	leaderAddress := serve(t, leader)
	bystander := standby("") // a second standby that knows no leader: must not be asked
	first := standby(leaderAddress)
	client := newClient(t, serve(t, first)+","+serve(t, bystander)+","+leaderAddress)

	if _, err := client.Queues(testContext(t)); err != nil {
		t.Fatalf("Queues: %v", err)
	}
	if first.callCount() != 1 || bystander.callCount() != 0 || leader.callCount() != 1 {
		t.Errorf("calls: first standby %d, other standby %d, leader %d; want 1, 0, 1",
			first.callCount(), bystander.callCount(), leader.callCount())
	}
	if client.CurrentAddress() != leaderAddress {
		t.Errorf("CurrentAddress = %s; want the leader %s", client.CurrentAddress(), leaderAddress)
	}
	if _, err := client.Queues(testContext(t)); err != nil || first.callCount() != 1 {
		t.Errorf("the next call should go straight to the leader: %v, standby calls %d", err, first.callCount())
	}
}

func TestAnUnreachableFirstAddressIsSkippedAndANeverReachedClientFailsFast(t *testing.T) {
	dead := deadAddress(t)
	live := &fakeScheduler{}
	client := newClient(t, dead+","+serve(t, live))
	if _, err := client.Queues(testContext(t)); err != nil || live.callCount() != 1 {
		t.Fatalf("Queues via the second address: %v (calls %d)", err, live.callCount())
	}

	lonely := newClient(t, dead, switchyard.WithFailoverTimeout(time.Minute))
	started := time.Now()
	_, err := lonely.Queues(testContext(t))
	if !errors.Is(err, switchyard.ErrUnavailable) || time.Since(started) > 5*time.Second {
		t.Errorf("a client that never reached a scheduler should report UNAVAILABLE at once; got %v after %v", err, time.Since(started))
	}
}

func TestARetriedSubmitKeepsItsMadeUpIdempotencyKey(t *testing.T) {
	var lock sync.Mutex
	var keys []string
	fake := &fakeScheduler{}
	fake.submit = func(_ context.Context, request *pb.SubmitTaskRequest) (*pb.SubmitTaskResponse, error) {
		lock.Lock()
		defer lock.Unlock()
		keys = append(keys, request.IdempotencyKey)
		if len(keys) == 1 { // the connection "drops" after the scheduler stored the task
			return nil, status.Error(codes.Unavailable, "connection reset")
		}
		return &pb.SubmitTaskResponse{TaskId: "t-1", Deduplicated: true}, nil
	}
	client := newClient(t, serve(t, fake))
	if _, err := client.Queues(testContext(t)); err != nil { // reach it once: from now on failures are retried
		t.Fatal(err)
	}
	response, err := client.Submit(testContext(t), switchyard.TaskSpec{Name: "x"})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	lock.Lock()
	defer lock.Unlock()
	if len(keys) != 2 || keys[0] != keys[1] || !strings.HasPrefix(keys[0], switchyard.AutoIdempotencyKeyPrefix) {
		t.Errorf("idempotency keys sent: %q; want the same made-up key twice", keys)
	}
	if response.Deduplicated {
		t.Error("a task deduplicated against the call's own first attempt is new to the caller")
	}
}

func TestWatchResumesAfterUnavailableWithoutRepeatingAState(t *testing.T) {
	var streams atomic.Int32
	fake := &fakeScheduler{watch: func(request *pb.WatchTaskRequest, stream pb.Scheduler_WatchTaskServer) error {
		id := request.TaskId
		if streams.Add(1) == 1 {
			_ = stream.Send(&pb.WatchTaskResponse{Task: task(id, pb.TaskState_TASK_STATE_PENDING, 0)})
			return status.Error(codes.Unavailable, "scheduler shutting down")
		}
		for _, next := range []*pb.Task{
			task(id, pb.TaskState_TASK_STATE_PENDING, 0), // the current state, seen already
			task(id, pb.TaskState_TASK_STATE_RUNNING, 0.5),
			task(id, pb.TaskState_TASK_STATE_SUCCEEDED, 1),
		} {
			if err := stream.Send(&pb.WatchTaskResponse{Task: next}); err != nil {
				return err
			}
		}
		return nil
	}}
	client := newClient(t, serve(t, fake))
	var seen []string
	err := client.WatchFunc(testContext(t), "t-1", func(task *pb.Task) error {
		seen = append(seen, switchyard.StateName(task.State))
		return nil
	})
	if err != nil || strings.Join(seen, ",") != "pending,running,succeeded" || streams.Load() != 2 {
		t.Errorf("watch saw %v (err %v) over %d streams; want pending,running,succeeded over 2", seen, err, streams.Load())
	}
}

func TestWaitEndsWithTheContextsDeadline(t *testing.T) {
	fake := &fakeScheduler{watch: func(request *pb.WatchTaskRequest, stream pb.Scheduler_WatchTaskServer) error {
		_ = stream.Send(&pb.WatchTaskResponse{Task: task(request.TaskId, pb.TaskState_TASK_STATE_RUNNING, 0)})
		<-stream.Context().Done() // the client's deadline ends the call
		return nil
	}}
	client := newClient(t, serve(t, fake))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := client.Wait(ctx, "t-slow")
	if !errors.Is(err, switchyard.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "t-slow") {
		t.Errorf("Wait past the deadline = %v; want DEADLINE_EXCEEDED naming the task", err)
	}
}

func TestIsTerminalAndDecodeResult(t *testing.T) {
	if !switchyard.IsTerminal(pb.TaskState_TASK_STATE_DEAD_LETTERED) || switchyard.IsTerminal(pb.TaskState_TASK_STATE_RETRYING) {
		t.Error("IsTerminal: dead_lettered ends a task, retrying does not")
	}
	var result map[string]int
	done := &pb.Task{TaskId: "t", State: pb.TaskState_TASK_STATE_SUCCEEDED, ResultJson: `{"n": 3}`}
	if err := switchyard.DecodeResult(done, &result); err != nil || result["n"] != 3 {
		t.Errorf("DecodeResult = %v, %v", result, err)
	}
	pending := &pb.Task{TaskId: "t", State: pb.TaskState_TASK_STATE_PENDING}
	if err := switchyard.DecodeResult(pending, &result); !errors.Is(err, switchyard.ErrFailedPrecondition) || !strings.Contains(err.Error(), "pending") {
		t.Errorf("DecodeResult of a pending task = %v", err)
	}
}

// deadAddress is a loopback address where nothing listens (a port just released).
func deadAddress(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	_ = listener.Close()
	return address
}
