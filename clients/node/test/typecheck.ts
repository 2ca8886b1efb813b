// Compiled (never run) by test/types.test.js with `tsc --strict --noEmit`: the package's types
// must describe what a TypeScript user writes against it.
import {
  NotFound,
  SchedulerClient,
  SwitchyardError,
  isTerminal,
  protoJSON,
  type QueueStats,
  type SubmitOptions,
  type Task,
  type TaskState,
  type WorkerInfo,
} from '@switchyard/client';

async function example(): Promise<void> {
  const client = new SchedulerClient('127.0.0.1:50051,127.0.0.1:50052', {
    timeoutMs: 5000,
    tlsCa: 'ca.pem',
    tokenFile: '/run/secrets/token',
    logger: { warn: (message: string) => process.stderr.write(message) },
  });
  const options: SubmitOptions = {
    kwargs: { path: 'a.mp3', nested: { n: 1, list: [true, null, 'x'] } },
    contentType: 'audio',
    gpu: 'required',
    priority: 8,
    labels: { zone: 'eu' },
    serializer: 'msgpack',
  };
  const submitted = await client.submit('media.transcribe', options);
  const id: string = submitted.taskId;
  const batch = await client.submitBatch([{ taskName: 'text.summarize', argsJson: '[1]' }]);
  const dedup: boolean = batch[0].deduplicated;
  for await (const task of client.watch(id, { timeoutMs: 60_000 })) {
    const state: TaskState = task.state;
    const started: Date | null = task.startedAt;
    const progress: number = task.progress;
    if (isTerminal(state)) console.log(state, started, progress, dedup);
  }
  const done: Task = await client.wait(id, { signal: AbortSignal.timeout(1000) });
  console.log(JSON.stringify(protoJSON(done)), done.result, done.labels['zone'], done.gpuMemoryMb + 1);
  const { previousState } = await client.cancel(id);
  const queues: QueueStats[] = await client.queues({ timeoutMs: 1000 });
  const pending: number = queues[0].pending;
  const workers: WorkerInfo[] = await client.workers();
  const gpus = workers[0].capabilities?.gpus.map((gpu) => gpu.memoryTotalMb) ?? [];
  console.log(previousState, pending, gpus);
  try {
    await client.get('nope');
  } catch (error) {
    if (error instanceof NotFound) console.log(error.code, error.statusCode, error.message);
    else if (error instanceof SwitchyardError) throw error;
  }
  client.close();
}

void example;
