// One JSON object per stdout line for the Go test that runs these scripts:
// {"ev": <kind>, "t": <wall clock epoch ms, sub-ms precision>, ...fields}.
export function emit(ev, fields = {}) {
    process.stdout.write(JSON.stringify({ ev, t: performance.timeOrigin + performance.now(), ...fields }) + '\n')
}

// A DevCycle logger (debug/info/warn/error) whose lines go to stdout as {"ev":"log"}.
export const logger = Object.fromEntries(
    ['debug', 'info', 'warn', 'error'].map((level) => [level, (msg) => emit('log', { level, msg: String(msg) })]),
)

// watchValue polls read() every millisecond and emits {"ev":"value"} whenever the result
// changes, so the Go test sees the moment a new config takes effect.
export function watchValue(read) {
    let last
    setInterval(() => {
        let value
        try {
            value = read()
        } catch (e) {
            value = `error: ${e}`
        }
        if (value !== last) {
            last = value
            emit('value', { value })
        }
    }, 1)
}

// exitWithParent ends the process when the Go test closes our stdin (or dies).
export function exitWithParent(cleanup) {
    process.stdin.resume()
    process.stdin.on('end', async () => {
        try {
            await cleanup()
        } finally {
            process.exit(0)
        }
    })
}
