// Command switchyard-submit submits one task and prints it as JSON: the canonical proto3 JSON
// of switchyard.v1.Task (lowerCamelCase names, enums by name, 64-bit integers as strings,
// RFC 3339 timestamps, fields at their default left out), as protojson writes it, indented
// by two spaces: the same output as the Node example (clients/node/examples/submit.js).
//
//	switchyard-submit --scheduler 127.0.0.1:50051 --task e2e.echo --kwargs '{"x": 1}' --content-type text --wait
//
// Without --wait it prints the task as it stands right after submission; with --wait, its
// terminal state. Exit status: 0 when printed (with --wait: when the task succeeded), 1 when
// a waited-for task ended otherwise or a call failed, 2 for a usage error.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	switchyard "github.com/switchyard/switchyard/clients/go"
	pb "github.com/switchyard/switchyard/clients/go/switchyard/v1"
)

const usage = `usage: switchyard-submit --scheduler HOST:PORT[,HOST:PORT] --task NAME [--args JSON] [--kwargs JSON]
                         [--content-type T] [--wait] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]] [--token-file FILE]

  --scheduler   scheduler address(es); default $SWITCHYARD_SCHEDULER or 127.0.0.1:50051
  --task        Celery task name, e.g. media.transcribe
  --args        positional arguments, a JSON array
  --kwargs      keyword arguments, a JSON object
  --content-type  kind of content (audio, video, document, text, ...): drives classification
  --wait        wait for the task to finish and print its terminal state
  --tls-ca      CA certificate (PEM) to verify the scheduler with: turns TLS on
  --tls-cert, --tls-key  client certificate and key (PEM) for mTLS
  --token-file  file holding a bearer token (default: $SWITCHYARD_TOKEN)`

// Exit statuses, as the Node example's.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a mistake on the command line: nothing was sent.
type usageError struct{ message string }

func (e usageError) Error() string { return e.message }

type flags struct {
	scheduler, task, args, kwargs, contentType string
	wait                                       bool
	tlsCA, tlsCert, tlsKey, tokenFile          string
}

func parse(arguments []string) (*flags, error) {
	set := flag.NewFlagSet("switchyard-submit", flag.ContinueOnError)
	set.SetOutput(io.Discard) // run prints the usage itself, once
	f := &flags{}
	set.StringVar(&f.scheduler, "scheduler", "", "")
	set.StringVar(&f.task, "task", "", "")
	set.StringVar(&f.args, "args", "", "")
	set.StringVar(&f.kwargs, "kwargs", "", "")
	set.StringVar(&f.contentType, "content-type", "", "")
	set.BoolVar(&f.wait, "wait", false, "")
	set.StringVar(&f.tlsCA, "tls-ca", "", "")
	set.StringVar(&f.tlsCert, "tls-cert", "", "")
	set.StringVar(&f.tlsKey, "tls-key", "", "")
	set.StringVar(&f.tokenFile, "token-file", "", "")
	if err := set.Parse(arguments); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, usageError{err.Error()}
	}
	if set.NArg() > 0 {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", set.Arg(0))}
	}
	if f.task == "" {
		return nil, usageError{"--task NAME is required"}
	}
	if f.scheduler == "" {
		f.scheduler = os.Getenv("SWITCHYARD_SCHEDULER")
	}
	if f.scheduler == "" {
		f.scheduler = switchyard.DefaultTarget
	}
	return f, nil
}

// run is the command without the process around it: arguments in, output and exit status out.
func run(ctx context.Context, arguments []string, stdout, stderr io.Writer) int {
	f, err := parse(arguments)
	if err == nil && f == nil {
		fmt.Fprintln(stdout, usage)
		return exitOK
	}
	var spec switchyard.TaskSpec
	if err == nil {
		spec, err = f.spec()
	}
	var usageProblem usageError
	if errors.As(err, &usageProblem) {
		fmt.Fprintf(stderr, "%s\n\nswitchyard-submit: error: %s\n", usage, usageProblem.message)
		return exitUsage
	}
	task, err := submit(ctx, f, spec)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard-submit: error: %v\n", err)
		return exitFailure
	}
	text, err := taskJSON(task)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard-submit: error: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, text)
	if f.wait && task.GetState() != pb.TaskState_TASK_STATE_SUCCEEDED {
		return exitFailure
	}
	return exitOK
}

func (f *flags) spec() (switchyard.TaskSpec, error) {
	spec := switchyard.TaskSpec{Name: f.task, ContentType: f.contentType}
	if f.args != "" {
		if err := decodeFlag(f.args, "--args", "array", &spec.Args); err != nil {
			return spec, err
		}
	}
	if f.kwargs != "" {
		if err := decodeFlag(f.kwargs, "--kwargs", "object", &spec.Kwargs); err != nil {
			return spec, err
		}
	}
	return spec, nil
}

// decodeFlag decodes a flag's JSON into target (a slice or a map), keeping numbers exact.
func decodeFlag(text, name, kind string, target any) error {
	opening := map[string]string{"array": "[", "object": "{"}[kind]
	if trimmed := strings.TrimSpace(text); json.Valid([]byte(trimmed)) && !strings.HasPrefix(trimmed, opening) {
		return usageError{fmt.Sprintf("%s must be a JSON %s; got %s", name, kind, text)}
	}
	decoder := json.NewDecoder(bytes.NewReader([]byte(text)))
	decoder.UseNumber() // 2**53 + 1 stays itself on its way to the task
	if err := decoder.Decode(target); err != nil {
		var typeError *json.UnmarshalTypeError
		if errors.As(err, &typeError) {
			return usageError{fmt.Sprintf("%s must be a JSON %s; got %s", name, kind, text)}
		}
		return usageError{fmt.Sprintf("%s is not valid JSON: %v", name, err)}
	}
	if decoder.More() {
		return usageError{fmt.Sprintf("%s is not valid JSON: more than one value", name)}
	}
	return nil
}

func submit(ctx context.Context, f *flags, spec switchyard.TaskSpec) (*pb.Task, error) {
	var options []switchyard.Option
	if f.tlsCA != "" || f.tlsCert != "" || f.tlsKey != "" {
		options = append(options, switchyard.WithTLS(switchyard.TLS{CAFile: f.tlsCA, CertFile: f.tlsCert, KeyFile: f.tlsKey}))
	}
	if f.tokenFile != "" {
		options = append(options, switchyard.WithTokenFile(f.tokenFile))
	}
	client, err := switchyard.New(f.scheduler, options...)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	submitted, err := client.Submit(ctx, spec)
	if err != nil {
		return nil, err
	}
	if f.wait {
		return client.Wait(ctx, submitted.GetTaskId())
	}
	return client.Get(ctx, submitted.GetTaskId())
}

// taskJSON is protojson's canonical JSON of task, indented by two spaces. protojson varies
// its whitespace on purpose; json.Indent makes it the same on every run.
func taskJSON(task *pb.Task) (string, error) {
	compact, err := protojson.Marshal(task)
	if err != nil {
		return "", err
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, compact, "", "  "); err != nil {
		return "", err
	}
	return indented.String(), nil
}
