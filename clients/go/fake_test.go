package switchyard_test

// In-process fake schedulers for the unit tests: real gRPC on loopback, hand-written answers.

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard/switchyard/clients/go/switchyard/v1"
)

// fakeScheduler answers the Scheduler calls the tests need; each hook left nil answers
// UNIMPLEMENTED. It records every call's method and request metadata.
type fakeScheduler struct {
	pb.UnimplementedSchedulerServer

	submit func(context.Context, *pb.SubmitTaskRequest) (*pb.SubmitTaskResponse, error)
	get    func(context.Context, *pb.GetTaskRequest) (*pb.GetTaskResponse, error)
	watch  func(*pb.WatchTaskRequest, pb.Scheduler_WatchTaskServer) error
	queues func(context.Context) (*pb.ListQueuesResponse, error)

	lock     sync.Mutex
	calls    []string
	metadata []metadata.MD
}

func (f *fakeScheduler) record(ctx context.Context, method string) {
	incoming, _ := metadata.FromIncomingContext(ctx)
	f.lock.Lock()
	defer f.lock.Unlock()
	f.calls = append(f.calls, method)
	f.metadata = append(f.metadata, incoming)
}

// callCount is how many calls reached the fake.
func (f *fakeScheduler) callCount() int {
	f.lock.Lock()
	defer f.lock.Unlock()
	return len(f.calls)
}

// lastMetadata is the request metadata of the latest call.
func (f *fakeScheduler) lastMetadata() metadata.MD {
	f.lock.Lock()
	defer f.lock.Unlock()
	if len(f.metadata) == 0 {
		return nil
	}
	return f.metadata[len(f.metadata)-1]
}

func (f *fakeScheduler) SubmitTask(ctx context.Context, request *pb.SubmitTaskRequest) (*pb.SubmitTaskResponse, error) {
	f.record(ctx, "SubmitTask")
	if f.submit == nil {
		return nil, status.Error(codes.Unimplemented, "no SubmitTask here")
	}
	return f.submit(ctx, request)
}

func (f *fakeScheduler) GetTask(ctx context.Context, request *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
	f.record(ctx, "GetTask")
	if f.get == nil {
		return nil, status.Error(codes.Unimplemented, "no GetTask here")
	}
	return f.get(ctx, request)
}

func (f *fakeScheduler) WatchTask(request *pb.WatchTaskRequest, stream pb.Scheduler_WatchTaskServer) error {
	f.record(stream.Context(), "WatchTask")
	if f.watch == nil {
		return status.Error(codes.Unimplemented, "no WatchTask here")
	}
	return f.watch(request, stream)
}

func (f *fakeScheduler) ListQueues(ctx context.Context, _ *pb.ListQueuesRequest) (*pb.ListQueuesResponse, error) {
	f.record(ctx, "ListQueues")
	if f.queues == nil {
		return &pb.ListQueuesResponse{Queues: []*pb.QueueStats{{Name: "default"}}}, nil
	}
	return f.queues(ctx)
}

// standby is a fake that answers every call as a scheduler that does not lead: UNAVAILABLE,
// naming leader (if any) in the switchyard-leader trailing metadata.
func standby(leader string) *fakeScheduler {
	refuse := func(ctx context.Context) error {
		if leader != "" {
			_ = grpc.SetTrailer(ctx, metadata.Pairs("switchyard-leader", leader))
		}
		return status.Error(codes.Unavailable, "this scheduler is a standby")
	}
	return &fakeScheduler{
		get: func(ctx context.Context, _ *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
			return nil, refuse(ctx)
		},
		queues: func(ctx context.Context) (*pb.ListQueuesResponse, error) { return nil, refuse(ctx) },
	}
}

// serve starts fake on a free loopback port and returns its address; stopped when the test ends.
func serve(t *testing.T, fake pb.SchedulerServer, options ...grpc.ServerOption) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	server := grpc.NewServer(options...)
	pb.RegisterSchedulerServer(server, fake)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}

// task is a Task message in state with the fields a watcher compares.
func task(id string, state pb.TaskState, progress float64) *pb.Task {
	return &pb.Task{TaskId: id, State: state, Progress: progress}
}
