// Package switchyard is the Go client of the Switchyard scheduler: submit Celery tasks from Go,
// follow them to their end, cancel them, and read the queues and workers.
//
//	client, err := switchyard.New("10.0.0.4:50051,10.0.0.5:50051")
//	if err != nil { ... }
//	defer client.Close()
//	submitted, err := client.Submit(ctx, switchyard.TaskSpec{
//		Name:        "media.transcribe_audio",
//		Kwargs:      map[string]any{"path": "a.mp3"},
//		ContentType: "audio",
//	})
//	task, err := client.Wait(ctx, submitted.TaskId)
//	fmt.Println(switchyard.StateName(task.State), task.WorkerId, task.ResultJson)
//
// Calls take a context.Context (its deadline bounds the call, retries included) and return
// the generated protobuf messages of package switchyardv1 (github.com/switchyard/switchyard/
// clients/go/switchyard/v1), which protojson prints in the contract's canonical JSON. Every
// error is an *Error carrying the gRPC status code; test it with errors.Is(err,
// switchyard.ErrNotFound) and the other sentinels.
//
// The client follows the leader among several schedulers, retries UNAVAILABLE with backoff
// (and gives submissions made-up idempotency keys so a retry cannot create a task twice),
// resumes a Watch after a failover, and speaks TLS (WithTLS, mTLS with a client certificate)
// and bearer tokens (WithToken, WithTokenFile), reading SWITCHYARD_TOKEN,
// SWITCHYARD_TOKEN_FILE and SWITCHYARD_TLS_* like the other clients unless told otherwise.
package switchyard
