package switchyard

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/switchyard/switchyard/clients/go/switchyard/v1"
)

// AutoIdempotencyKeyPrefix starts the idempotency keys the client makes up for submissions
// that have none.
const AutoIdempotencyKeyPrefix = "switchyard-auto-"

// MaxPriority is the most urgent priority a task may ask for (1 is the lowest; 0 lets the
// scheduler decide).
const MaxPriority = 10

// TaskSpec is one task to submit: its Celery name and everything else about it. Every field
// but Name has a zero value that lets the scheduler decide.
type TaskSpec struct {
	// Name is the Celery task name registered in the worker's app, e.g. "media.transcribe".
	Name string
	// Args are the positional arguments, sent as JSON (encoding/json); not with ArgsJSON.
	Args []any
	// Kwargs are the keyword arguments, sent as JSON; not with KwargsJSON.
	Kwargs map[string]any
	// ArgsJSON is Args as JSON text (an array), passed through unchanged.
	ArgsJSON string
	// KwargsJSON is Kwargs as JSON text (an object), passed through unchanged.
	KwargsJSON string
	// ContentType is what the payload is (audio, video, document, ...): drives classification.
	ContentType string
	// GPU is the GPU need; GPU_REQUIREMENT_UNSPECIFIED lets classification decide.
	GPU pb.GpuRequirement
	// GPUMemoryMB is the GPU memory the task needs on one device, MiB.
	GPUMemoryMB uint64
	// Priority is 1 (lowest) to MaxPriority; 0 lets the scheduler decide.
	Priority uint32
	// Queue overrides the logical queue classification would choose.
	Queue string
	// IdempotencyKey: a key seen before returns the original task instead of a new one.
	// Without one the client makes one up (see WithoutAutoIdempotencyKeys).
	IdempotencyKey string
	// Labels are worker labels the task requires, all of them, exactly.
	Labels map[string]string
	// PreferredLabels only raise the score of workers that have them.
	PreferredLabels map[string]string
	// UserInitiated says a person waits for the task (raises its priority).
	UserInitiated bool
	// RetryPolicy names a retry policy of the scheduler's configuration ("" uses the queue's).
	RetryPolicy string
	// SoftTimeLimit: the task gets SoftTimeLimitExceeded after it (0 uses the queue's).
	SoftTimeLimit time.Duration
	// HardTimeLimit: the task's process is killed after it (0 uses the queue's).
	HardTimeLimit time.Duration
	// BatchSize is the size of the batch the task belongs to (> 10 lowers its priority by 1).
	BatchSize uint32
	// AllowUnschedulable accepts the task even when no worker the scheduler knows could ever
	// run it (you expect such a worker to join); without it that is ErrFailedPrecondition.
	AllowUnschedulable bool
	// Serializer encodes the task's Celery message (JSON or MessagePack);
	// SERIALIZER_UNSPECIFIED uses the queue's.
	Serializer pb.Serializer
}

// Request is the SubmitTaskRequest for the spec, checked client-side: an ErrInvalidArgument
// names what is wrong (no name, both Args and ArgsJSON, arguments encoding/json cannot encode,
// a priority above MaxPriority, a negative time limit or a soft limit above the hard one).
func (spec TaskSpec) Request() (*pb.SubmitTaskRequest, error) {
	if strings.TrimSpace(spec.Name) == "" {
		return nil, invalidArgument("a task needs a name (the Celery task name, e.g. \"media.transcribe\")")
	}
	if spec.ArgsJSON != "" && len(spec.Args) > 0 {
		return nil, invalidArgument("give Args or ArgsJSON, not both")
	}
	if spec.KwargsJSON != "" && len(spec.Kwargs) > 0 {
		return nil, invalidArgument("give Kwargs or KwargsJSON, not both")
	}
	if spec.Priority > MaxPriority {
		return nil, invalidArgument("priority must be 0 (the scheduler decides) or 1-%d; got %d", MaxPriority, spec.Priority)
	}
	if _, known := pb.GpuRequirement_name[int32(spec.GPU)]; !known {
		return nil, invalidArgument("unknown GPU requirement %d", spec.GPU)
	}
	if _, known := pb.Serializer_name[int32(spec.Serializer)]; !known {
		return nil, invalidArgument("unknown serializer %d", spec.Serializer)
	}
	soft, err := seconds(spec.SoftTimeLimit, "soft time limit")
	if err != nil {
		return nil, err
	}
	hard, err := seconds(spec.HardTimeLimit, "hard time limit")
	if err != nil {
		return nil, err
	}
	if hard > 0 && soft > hard {
		return nil, invalidArgument("the soft time limit (%v) must not exceed the hard time limit (%v)", spec.SoftTimeLimit, spec.HardTimeLimit)
	}
	argsJSON := spec.ArgsJSON
	if len(spec.Args) > 0 {
		if argsJSON, err = encodeJSON(spec.Args, "Args"); err != nil {
			return nil, err
		}
	}
	kwargsJSON := spec.KwargsJSON
	if len(spec.Kwargs) > 0 {
		if kwargsJSON, err = encodeJSON(spec.Kwargs, "Kwargs"); err != nil {
			return nil, err
		}
	}
	return &pb.SubmitTaskRequest{
		TaskName:             spec.Name,
		ArgsJson:             argsJSON,
		KwargsJson:           kwargsJSON,
		ContentType:          spec.ContentType,
		Gpu:                  spec.GPU,
		GpuMemoryMb:          spec.GPUMemoryMB,
		Priority:             spec.Priority,
		Queue:                spec.Queue,
		IdempotencyKey:       spec.IdempotencyKey,
		Labels:               copyLabels(spec.Labels),
		UserInitiated:        spec.UserInitiated,
		RetryPolicy:          spec.RetryPolicy,
		SoftTimeLimitSeconds: soft,
		HardTimeLimitSeconds: hard,
		BatchSize:            spec.BatchSize,
		PreferredLabels:      copyLabels(spec.PreferredLabels),
		AllowUnschedulable:   spec.AllowUnschedulable,
		Serializer:           spec.Serializer,
	}, nil
}

func seconds(limit time.Duration, what string) (float64, error) {
	if limit < 0 {
		return 0, invalidArgument("the %s must be >= 0; got %v", what, limit)
	}
	return limit.Seconds(), nil
}

// encodeJSON is value as compact JSON, with <, > and & left as they are (encoding/json's
// HTML escaping would send them as \u003c ...).
func encodeJSON(value any, what string) (string, error) {
	var buffer bytes.Buffer
	encoder := json.NewEncoder(&buffer)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(value); err != nil {
		return "", invalidArgument("%s must be encodable as JSON: %v", what, err)
	}
	return strings.TrimSuffix(buffer.String(), "\n"), nil
}

func copyLabels(labels map[string]string) map[string]string {
	if len(labels) == 0 {
		return nil
	}
	copied := make(map[string]string, len(labels))
	for key, value := range labels {
		copied[key] = value
	}
	return copied
}

// newIdempotencyKey is AutoIdempotencyKeyPrefix and 128 random bits in hex.
func newIdempotencyKey() string {
	var random [16]byte
	if _, err := rand.Read(random[:]); err != nil {
		panic("switchyard: no randomness for an idempotency key: " + err.Error())
	}
	return AutoIdempotencyKeyPrefix + hex.EncodeToString(random[:])
}

// giveIdempotencyKey gives request a fresh key if it has none (and the client makes them up);
// true when it did. One key per logical submission: every retry reuses it.
func (c *Client) giveIdempotencyKey(request *pb.SubmitTaskRequest) bool {
	if request.IdempotencyKey != "" || !c.settings.autoKeys {
		return false
	}
	request.IdempotencyKey = newIdempotencyKey()
	return true
}

// ownResult undoes "deduplicated" for a key the client made up: only this call's own earlier
// attempt can hold it, so to the caller the task is new.
func ownResult(response *pb.SubmitTaskResponse, madeUpKey bool) *pb.SubmitTaskResponse {
	if madeUpKey {
		response.Deduplicated = false
	}
	return response
}

// Submit submits one task and returns at once with its id and where the scheduler queued it.
// A bad spec is an ErrInvalidArgument before any call. A spec without an idempotency key gets
// one made up, so that retrying after a lost connection cannot create the task twice.
func (c *Client) Submit(ctx context.Context, spec TaskSpec) (*pb.SubmitTaskResponse, error) {
	request, err := spec.Request()
	if err != nil {
		return nil, err
	}
	madeUp := c.giveIdempotencyKey(request)
	response, err := unary(ctx, c, request.IdempotencyKey != "",
		func(ctx context.Context, stub pb.SchedulerClient, options ...grpc.CallOption) (*pb.SubmitTaskResponse, error) {
			return stub.SubmitTask(ctx, request, options...)
		})
	if err != nil {
		return nil, err
	}
	return ownResult(response, madeUp), nil
}

// SubmitBatch submits several tasks atomically (all accepted or none); the results are in
// the order of specs. Specs without an idempotency key get one as in Submit.
func (c *Client) SubmitBatch(ctx context.Context, specs []TaskSpec) ([]*pb.SubmitTaskResponse, error) {
	requests := make([]*pb.SubmitTaskRequest, len(specs))
	madeUp := make([]bool, len(specs))
	repeatable := true
	for i, spec := range specs {
		request, err := spec.Request()
		if err != nil {
			failure := fromError(err)
			failure.Message = "task " + strconv.Itoa(i) + " of the batch: " + failure.Message
			return nil, failure
		}
		madeUp[i] = c.giveIdempotencyKey(request)
		repeatable = repeatable && request.IdempotencyKey != ""
		requests[i] = request
	}
	batch := &pb.SubmitBatchRequest{Tasks: requests}
	response, err := unary(ctx, c, repeatable,
		func(ctx context.Context, stub pb.SchedulerClient, options ...grpc.CallOption) (*pb.SubmitBatchResponse, error) {
			return stub.SubmitBatch(ctx, batch, options...)
		})
	if err != nil {
		return nil, err
	}
	for i, result := range response.GetResults() {
		if i < len(madeUp) {
			ownResult(result, madeUp[i])
		}
	}
	return response.GetResults(), nil
}

// Get returns the task's current state; ErrNotFound for an unknown id.
func (c *Client) Get(ctx context.Context, taskID string) (*pb.Task, error) {
	request := &pb.GetTaskRequest{TaskId: taskID}
	response, err := unary(ctx, c, true,
		func(ctx context.Context, stub pb.SchedulerClient, options ...grpc.CallOption) (*pb.GetTaskResponse, error) {
			return stub.GetTask(ctx, request, options...)
		})
	if err != nil {
		return nil, err
	}
	return response.GetTask(), nil
}

// Cancel cancels a task: a pending task never runs, a running one is revoked. The response
// holds the task after cancellation and the state it was in. Cancelling a finished task is an
// ErrFailedPrecondition. Retried after UNAVAILABLE, where a connection lost after the
// scheduler cancelled makes the retry report ErrFailedPrecondition although the cancel took
// effect; not retried after a deadline.
func (c *Client) Cancel(ctx context.Context, taskID string) (*pb.CancelTaskResponse, error) {
	request := &pb.CancelTaskRequest{TaskId: taskID}
	return unary(ctx, c, false,
		func(ctx context.Context, stub pb.SchedulerClient, options ...grpc.CallOption) (*pb.CancelTaskResponse, error) {
			return stub.CancelTask(ctx, request, options...)
		})
}

// Queues returns the statistics of every logical queue, in configuration order.
func (c *Client) Queues(ctx context.Context) ([]*pb.QueueStats, error) {
	response, err := unary(ctx, c, true,
		func(ctx context.Context, stub pb.SchedulerClient, options ...grpc.CallOption) (*pb.ListQueuesResponse, error) {
			return stub.ListQueues(ctx, &pb.ListQueuesRequest{}, options...)
		})
	if err != nil {
		return nil, err
	}
	return response.GetQueues(), nil
}

// Workers returns every worker the scheduler knows, connected or within its grace period.
func (c *Client) Workers(ctx context.Context) ([]*pb.WorkerInfo, error) {
	response, err := unary(ctx, c, true,
		func(ctx context.Context, stub pb.SchedulerClient, options ...grpc.CallOption) (*pb.ListWorkersResponse, error) {
			return stub.ListWorkers(ctx, &pb.ListWorkersRequest{}, options...)
		})
	if err != nil {
		return nil, err
	}
	return response.GetWorkers(), nil
}

// IsTerminal reports whether a task in state will never change again (succeeded, failed,
// dead-lettered or cancelled).
func IsTerminal(state pb.TaskState) bool {
	switch state {
	case pb.TaskState_TASK_STATE_SUCCEEDED, pb.TaskState_TASK_STATE_FAILED,
		pb.TaskState_TASK_STATE_DEAD_LETTERED, pb.TaskState_TASK_STATE_CANCELLED:
		return true
	}
	return false
}

// StateName is the short name of a task state, "succeeded" for TASK_STATE_SUCCEEDED, as the
// CLI and the other clients print it.
func StateName(state pb.TaskState) string {
	return strings.ToLower(strings.TrimPrefix(state.String(), "TASK_STATE_"))
}

// DecodeResult decodes a succeeded task's result (its result_json) into target, as
// json.Unmarshal does. A task without a result is an ErrFailedPrecondition naming its state.
func DecodeResult(task *pb.Task, target any) error {
	if task.GetResultJson() == "" {
		return &Error{Code: codes.FailedPrecondition, Message: "task " + task.GetTaskId() + " has no result (state " + StateName(task.GetState()) + ")"}
	}
	if err := json.Unmarshal([]byte(task.GetResultJson()), target); err != nil {
		return invalidArgument("the result of task %s does not decode: %v", task.GetTaskId(), err)
	}
	return nil
}
