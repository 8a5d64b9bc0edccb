/** One service for every suite of this test process: started on first use, stopped after all tests. */
import { after } from "node:test";

import { Service } from "./service.js";

let started: Promise<Service> | undefined;

export function sharedService(): Promise<Service> {
  started ??= Service.start();
  return started;
}

after(async () => {
  const service = await started?.catch(() => undefined);
  await service?.stop();
});

/** Polls `probe` until it returns a value; a bound on how long the service may take, not a speed assumption. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, withinMs = 60_000): Promise<T> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((wake) => setTimeout(wake, 200));
  }
  throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
}
