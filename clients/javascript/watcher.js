// The javascript column of the watchdrop matrix: @kubernetes/client-node.
//
// Follows the watcher contract in clients/README.md: settings come from WATCHDROP_* variables,
// and what the library did is printed as JSON lines on stdout. The two styles are the ones the
// library's README and examples show:
//
// - `watch` (default): `new k8s.Watch(kc).watch(path, {}, callback, done)`, started again from
//   `done` as a long-running program does (examples/typescript/watch/watch-example.ts shows one
//   watch; a program that keeps watching calls it again when `done` runs).
// - `informer`: `k8s.makeInformer(kc, path, listFn)` with add/update/delete/error handlers, and
//   `informer.start()` again 5 s after an error, as examples/typescript/informer/informer.ts does.
//
// Nothing else is added: no timeouts, keepalives or retries of the watcher's own. The library's
// defaults are what is measured, and they differ by release: 2.x watches through undici with a
// 30 s inactivity timeout and TCP keepalive after 30 s idle; 1.0.x-1.1.x watch through node-fetch
// with neither (a variant's build_env picks an older release, see client.yaml).
//
// The library is imported only inside main(), so the pure helpers below can be unit-tested
// without node_modules (tests/test_clients_js_rust.py).

import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const CLIENT = 'javascript';
const LIBRARY = '@kubernetes/client-node';
export const STYLES = ['watch', 'informer'];

// After a watch failed, the loop waits this long before watching again. Without it an
// unreachable API server turns the loop into a busy spin that floods stdout; a user's loop would
// sleep too. A watch that simply ended is started again at once, as user code does.
const RETRY_PAUSE_MS = 1000;
// The library's informer example starts the informer again 5 s after an error.
const INFORMER_RESTART_MS = 5000;

const EXIT_OK = 0;
const EXIT_CRASH = 1;
const EXIT_USAGE = 2;

// Set on SIGTERM: whatever breaks after it was broken by us, which is not evidence.
let stopping = false;

/** Print one contract line. process.stdout is synchronous for files and pipes on Linux, so the
 * line is out before the next statement runs, which keeps ts honest against the pcap. */
export function emit(event, extra = {}) {
    const ts = (performance.timeOrigin + performance.now()) / 1000;
    process.stdout.write(`${JSON.stringify({ ts, event, ...extra })}\n`);
}

export class UsageError extends Error {}

/** Parse and check the environment; throws UsageError naming the first bad variable. */
export function settingsFromEnv(env) {
    const scenario = env.WATCHDROP_SCENARIO ?? '';
    const style = env.WATCHDROP_STYLE || STYLES[0];
    const namespace = env.WATCHDROP_NAMESPACE ?? '';
    if (!STYLES.includes(style)) {
        throw new UsageError(`WATCHDROP_STYLE=${JSON.stringify(style)}: this client implements ${STYLES.join(', ')}`);
    }
    if (!namespace) {
        throw new UsageError('WATCHDROP_NAMESPACE is not set');
    }
    let rounds = 0;
    let idleMs = 0;
    if (scenario === 'idle-request') {
        const rawRounds = env.WATCHDROP_ROUNDS ?? '';
        rounds = /^\d+$/.test(rawRounds) ? Number(rawRounds) : NaN;
        if (!(rounds >= 1)) {
            throw new UsageError(`WATCHDROP_ROUNDS=${JSON.stringify(rawRounds)}: want a whole number of at least 1`);
        }
        const rawIdle = env.WATCHDROP_IDLE ?? '';
        const idle = rawIdle.trim() === '' ? NaN : Number(rawIdle);
        if (!Number.isFinite(idle) || idle < 0) {
            throw new UsageError(`WATCHDROP_IDLE=${JSON.stringify(rawIdle)}: want seconds, at least 0`);
        }
        idleMs = idle * 1000;
    } else if (scenario !== 'watch') {
        throw new UsageError(`WATCHDROP_SCENARIO=${JSON.stringify(scenario)}: want "watch" or "idle-request"`);
    }
    return { kubeconfig: env.WATCHDROP_KUBECONFIG || null, namespace, scenario, style, rounds, idleMs };
}

/** The style for the started line, known before the settings are checked: idle-request uses no
 * watch at all, only two list calls. */
export function reportedStyle(env) {
    return env.WATCHDROP_SCENARIO === 'idle-request' ? 'list' : env.WATCHDROP_STYLE || STYLES[0];
}

/** The error with its chain of causes. undici reports a broken connection as
 * "TypeError: fetch failed" and keeps the socket error (ECONNRESET, ...) in `cause`. */
export function errorMessage(err) {
    const parts = [];
    let e = err;
    for (let depth = 0; e !== undefined && e !== null && depth < 6; depth += 1) {
        let text;
        if (e instanceof Error) {
            text = `${e.name}: ${e.message}`;
        } else if (typeof e === 'object') {
            text = JSON.stringify(e);
        } else {
            text = String(e);
        }
        if (typeof e?.code === 'string' && !text.includes(e.code)) {
            text += ` (${e.code})`;
        }
        if (!parts.some((p) => p.includes(text))) {
            parts.push(text);
        }
        e = e instanceof Error ? e.cause : undefined;
    }
    return parts.join(': ');
}

/** The fields of an `error` line: the message, the error's name, and the HTTP status when the
 * library attached one (ApiException.code, or statusCode on a refused watch). */
export function errorFields(err) {
    const fields = { message: errorMessage(err) };
    if (err instanceof Error) {
        fields.name = err.name;
    }
    const status = typeof err?.code === 'number' ? err.code : err?.statusCode;
    if (typeof status === 'number') {
        fields.status = status;
    }
    return fields;
}

/** The 2.x Watch's own inactivity timeout (no byte for 30 s) ends a watch with a TimeoutError.
 * It is the library's designed way to notice a dead stream, and the library's own informer
 * treats it as a plain re-watch, not as an error (it calls no error handler); the watch loop
 * does the same, so it prints `reconnect` and no `error` for it. */
export function isClientTimeout(err) {
    return err?.name === 'TimeoutError';
}

/** One event-seen line for a ConfigMap the library delivered. */
export function eventSeen(type, obj) {
    emit('event-seen', {
        type,
        name: obj?.metadata?.name ?? null,
        value: obj?.data?.value ?? null,
        resourceVersion: obj?.metadata?.resourceVersion ?? null,
    });
}

/** Wrap Watch.prototype.watch, which both styles go through (makeInformer builds its own Watch),
 * so that every watch request the library sends is seen, including the re-watches an informer
 * makes on its own and tells no handler about. It only looks: the arguments and the returned
 * controller are the library's own. Prints `watch-opened` once the server answered 200,
 * `watch-ended` (not in the contract's table; kept as evidence of how each stream ended) and, when
 * the library re-watches by itself (informer), `reconnect` with the previous stream's end. */
export function observeWatches(WatchClass, libraryRewatches) {
    const original = WatchClass.prototype.watch;
    let sent = 0;
    let lastEnd = null;
    WatchClass.prototype.watch = async function observedWatch(path, queryParams, callback, done) {
        sent += 1;
        const resourceVersion = queryParams?.resourceVersion || null;
        if (sent > 1 && libraryRewatches) {
            const previous = lastEnd ?? 'previous watch still open';
            emit('reconnect', {
                reason: `library re-watch from resourceVersion ${resourceVersion ?? 'none'}; previous watch: ${previous}`,
            });
        }
        lastEnd = null;
        let ended = false;
        const observedDone = (err) => {
            ended = true;
            lastEnd = err ? errorMessage(err) : 'the stream closed';
            if (!stopping) {
                let cause = 'closed';
                if (err) {
                    cause = isClientTimeout(err) ? 'client-timeout' : 'error';
                }
                emit('watch-ended', { cause, message: lastEnd });
            }
            return done(err);
        };
        const controller = await original.call(this, path, queryParams, callback, observedDone);
        // watch() resolves after the response headers; if done already ran, the request failed.
        if (!ended) {
            emit('watch-opened', resourceVersion ? { status: 200, resourceVersion } : { status: 200 });
        }
        return controller;
    };
}

function readJson(url) {
    try {
        return JSON.parse(readFileSync(url, 'utf8'));
    } catch {
        return null;
    }
}

/** The installed library's version and HTTP stack, read from node_modules beside this file (the
 * build copies it into the output folder), so the started line states what was installed. */
function installed() {
    const base = new URL('./node_modules/', import.meta.url);
    const lib = readJson(new URL('@kubernetes/client-node/package.json', base));
    const info = { version: lib?.version ?? 'unknown' };
    for (const http of ['undici', 'node-fetch']) {
        if (lib?.dependencies?.[http] === undefined) {
            continue;
        }
        const pkg =
            readJson(new URL(`@kubernetes/client-node/node_modules/${http}/package.json`, base)) ??
            readJson(new URL(`${http}/package.json`, base));
        info.http = `${http} ${pkg?.version ?? 'unknown'}`;
    }
    return info;
}

function configMapsPath(namespace) {
    return `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`;
}

/** The `watch` style: Watch.watch with no query parameters, watched again whenever done runs. */
async function runWatch(k8s, kc, namespace) {
    observeWatches(k8s.Watch, false);
    const watch = new k8s.Watch(kc);
    const again = (reason, pauseMs) => {
        emit('reconnect', { reason });
        setTimeout(start, pauseMs);
    };
    const onEvent = (type, obj) => {
        if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
            eventSeen(type, obj);
        } else if (type === 'ERROR') {
            // The server's Status object in the stream (e.g. 410 Gone); the stream ends after it.
            emit('error', { message: obj?.message ?? JSON.stringify(obj), status: obj?.code, source: 'watch event' });
        }
    };
    const onDone = (err) => {
        if (stopping) {
            return;
        }
        if (err && !isClientTimeout(err)) {
            emit('error', errorFields(err));
            again('the watch ended with an error', RETRY_PAUSE_MS);
        } else if (err) {
            again(`client-side inactivity timeout: ${errorMessage(err)}`, 0);
        } else {
            again('the watch ended', 0);
        }
    };
    async function start() {
        try {
            await watch.watch(configMapsPath(namespace), {}, onEvent, onDone);
        } catch (err) {
            // watch() itself threw before sending anything (no cluster, credentials).
            if (!stopping) {
                emit('error', errorFields(err));
                again('the watch request could not be made', RETRY_PAUSE_MS);
            }
        }
    }
    await start();
}

/** The `informer` style: makeInformer with add/update/delete/error handlers, as the example. */
async function runInformer(k8s, kc, namespace) {
    observeWatches(k8s.Watch, true);
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const listFn = () => api.listNamespacedConfigMap({ namespace });
    const informer = k8s.makeInformer(kc, configMapsPath(namespace), listFn);
    informer.on('add', (obj) => eventSeen('ADDED', obj));
    informer.on('update', (obj) => eventSeen('MODIFIED', obj));
    informer.on('delete', (obj) => eventSeen('DELETED', obj));
    informer.on('error', (err) => {
        if (stopping) {
            return;
        }
        emit('error', errorFields(err));
        // The informer has stopped; the example starts it again after 5 s. The observer prints
        // the reconnect line when the restarted informer sends its watch.
        setTimeout(() => {
            informer.start();
        }, INFORMER_RESTART_MS);
    });
    try {
        await informer.start();
    } catch (err) {
        // Only 1.0.x lets a failed first list escape from start(); the informer is then stopped.
        emit('error', errorFields(err));
    }
}

/** idle-request: list, stay idle, list again through the same API client object. */
async function runIdleRequests(k8s, kc, settings) {
    const api = kc.makeApiClient(k8s.CoreV1Api);
    for (let round = 1; round <= settings.rounds; round += 1) {
        for (const request of [1, 2]) {
            if (request === 2) {
                await new Promise((resolve) => setTimeout(resolve, settings.idleMs));
            }
            emit('request-sent', { round, request });
            try {
                const list = await api.listNamespacedConfigMap({ namespace: settings.namespace });
                // The generated method resolves only for a 2xx answer, and kube-apiserver answers
                // a successful LIST with 200.
                emit('request-done', { round, request, ok: true, status: 200, items: list?.items?.length ?? 0 });
            } catch (err) {
                const { name, ...rest } = errorFields(err);
                emit('request-done', { round, request, ok: false, exception: name, ...rest });
            }
        }
    }
}

async function main() {
    const env = process.env;
    const lib = installed();
    emit('started', {
        client: CLIENT,
        library: LIBRARY,
        version: lib.version,
        style: reportedStyle(env),
        node: process.version,
        http: lib.http,
    });
    let settings;
    try {
        settings = settingsFromEnv(env);
    } catch (err) {
        emit('error', { message: err.message });
        return EXIT_USAGE;
    }
    // SIGTERM is how the runner ends a watch; both signals end the run with 0.
    for (const sig of ['SIGTERM', 'SIGINT']) {
        process.on(sig, () => {
            stopping = true;
            process.exit(EXIT_OK);
        });
    }
    // A promise the library rejects with nobody listening (1.0.x's informer lets a failed list
    // escape from start()) would make Node end the process. The contract wants the library's
    // failure reported, not a crash of the watcher, so it is printed; whatever it broke stays
    // broken, as it would in the user's program.
    process.on('unhandledRejection', (reason) => {
        if (!stopping) {
            emit('error', { ...errorFields(reason), unhandled: true });
        }
    });

    let k8s;
    let kc;
    try {
        k8s = await import('@kubernetes/client-node');
        kc = new k8s.KubeConfig();
        if (settings.kubeconfig) {
            kc.loadFromFile(settings.kubeconfig);
        } else {
            kc.loadFromCluster();
        }
    } catch (err) {
        emit('error', errorFields(err));
        return EXIT_CRASH;
    }

    if (settings.scenario === 'idle-request') {
        await runIdleRequests(k8s, kc, settings);
        return EXIT_OK;
    }
    // The watch scenario runs until SIGTERM. Sockets and timers normally keep Node alive, but in
    // a gap between them (a backoff) nothing would; this timer guarantees the process waits.
    setInterval(() => {}, 1 << 30);
    if (settings.style === 'informer') {
        await runInformer(k8s, kc, settings.namespace);
    } else {
        await runWatch(k8s, kc, settings.namespace);
    }
    return null;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
    main().then(
        (code) => {
            if (code !== null) {
                process.exit(code);
            }
        },
        (err) => {
            emit('error', errorFields(err));
            process.exit(EXIT_CRASH);
        },
    );
}
