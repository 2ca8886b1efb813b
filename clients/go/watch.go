package switchyard

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"

	pb "github.com/switchyard/switchyard/clients/go/switchyard/v1"
)

// TaskWatch follows one task, from its state now to its terminal state:
//
//	watch := client.Watch(ctx, taskID)
//	defer watch.Close()
//	for watch.Next() {
//		task := watch.Task()
//		fmt.Println(switchyard.StateName(task.State), task.Progress)
//	}
//	if err := watch.Err(); err != nil { ... }
//
// When the stream breaks (the scheduler restarts, a standby takes over) the watch reconnects,
// to the leader when a standby names it, backing off for up to the failover timeout, and
// resumes: the scheduler sends the current state first, which is skipped when it is the one
// seen last, so no state is seen twice. The context bounds the whole watch.
type TaskWatch struct {
	client  *Client
	ctx     context.Context
	taskID  string
	address string

	stream       pb.Scheduler_WatchTaskClient
	cancelStream context.CancelFunc
	failover     *failover
	lastKey      *changeKey

	task     *pb.Task
	err      error
	finished bool
}

// changeKey is what makes a task's new version news to a watcher (the scheduler's own rule).
type changeKey struct {
	state    pb.TaskState
	attempt  uint32
	progress float64
	message  string
	workerID string
}

func keyOf(task *pb.Task) changeKey {
	return changeKey{task.GetState(), task.GetAttempt(), task.GetProgress(), task.GetProgressMessage(), task.GetWorkerId()}
}

// Watch starts following the task; nothing is sent until the first Next.
func (c *Client) Watch(ctx context.Context, taskID string) *TaskWatch {
	return &TaskWatch{client: c, ctx: ctx, taskID: taskID, address: c.CurrentAddress()}
}

// Next waits for the task's next state and reports whether there is one; false after the
// terminal state has been returned, or on an error (see Err).
func (w *TaskWatch) Next() bool {
	if w.finished || w.err != nil {
		return false
	}
	for {
		if w.stream == nil {
			stub, err := w.client.stub(w.address)
			if err != nil {
				return w.fail(err)
			}
			streamCtx, cancel := context.WithCancel(w.ctx)
			stream, err := stub.WatchTask(streamCtx, &pb.WatchTaskRequest{TaskId: w.taskID})
			if err != nil {
				cancel()
				if !w.reconnect(err, "") {
					return false
				}
				continue
			}
			w.stream, w.cancelStream = stream, cancel
		}
		response, err := w.stream.Recv()
		if err == nil {
			w.client.answered(w.address)
			if w.failover != nil {
				w.failover.recovered(w.address)
				w.failover = nil
			}
			task := response.GetTask()
			key := keyOf(task)
			if w.lastKey != nil && *w.lastKey == key {
				continue // the current state a resumed stream starts with, seen already
			}
			w.lastKey, w.task = &key, task
			if IsTerminal(task.GetState()) {
				w.finished = true
				w.closeStream()
			}
			return true
		}
		hint := ""
		if err != io.EOF {
			hint = leaderHint(w.stream.Trailer())
		}
		w.closeStream()
		if !w.reconnect(err, hint) {
			return false
		}
	}
}

// reconnect decides after a broken stream: false (with Err set) unless the failure is
// UNAVAILABLE (or the stream ended early) and an address is left to try.
func (w *TaskWatch) reconnect(err error, hint string) bool {
	var failure *Error
	if err == io.EOF {
		failure = &Error{Code: codes.Unavailable, Message: "the stream ended before task " + w.taskID + " finished"}
	} else {
		if w.ctx.Err() != nil {
			return w.fail(w.ctx.Err())
		}
		failure = fromError(err)
		if failure.Code != codes.Unavailable {
			w.client.markReached()
			return w.fail(failure)
		}
	}
	if w.failover == nil {
		// Announce at once only a stream that was delivering: a first connection that fails
		// is an error to report, not a loss to recover from.
		w.failover = w.client.newFailover(w.lastKey != nil)
	}
	address, err := w.failover.next(w.ctx, w.address, failure, hint)
	if err != nil {
		return w.fail(err)
	}
	w.address = address
	return true
}

func (w *TaskWatch) fail(err error) bool {
	w.closeStream()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		failure := fromError(err)
		failure.Message = "watching task " + w.taskID + ": " + failure.Message
		w.err = failure
	} else {
		w.err = fromError(err)
	}
	return false
}

// Task is the state Next found.
func (w *TaskWatch) Task() *pb.Task { return w.task }

// Err is what ended the watch early (nil after a terminal state): an *Error.
func (w *TaskWatch) Err() error { return w.err }

// Close stops the watch and its call; safe to call at any time, and more than once.
func (w *TaskWatch) Close() {
	w.finished = true
	w.closeStream()
}

func (w *TaskWatch) closeStream() {
	if w.cancelStream != nil {
		w.cancelStream()
	}
	w.stream, w.cancelStream = nil, nil
}

// WatchFunc calls handle with the task now and after every change, up to its terminal state;
// it returns handle's first error, or what ended the watch early (see TaskWatch).
func (c *Client) WatchFunc(ctx context.Context, taskID string, handle func(*pb.Task) error) error {
	watch := c.Watch(ctx, taskID)
	defer watch.Close()
	for watch.Next() {
		if err := handle(watch.Task()); err != nil {
			return err
		}
	}
	return watch.Err()
}

// Wait blocks until the task reaches a terminal state and returns it. Bound it with the
// context (ErrDeadlineExceeded); it rides out a scheduler restart or failover like Watch.
func (c *Client) Wait(ctx context.Context, taskID string) (*pb.Task, error) {
	watch := c.Watch(ctx, taskID)
	defer watch.Close()
	var last *pb.Task
	for watch.Next() {
		last = watch.Task()
	}
	if err := watch.Err(); err != nil {
		return nil, err
	}
	return last, nil
}
