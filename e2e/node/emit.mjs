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

// runClientSDK does what both client SDK scripts do with js-client-sdk's initializeDevCycle:
// argv[2] is JSON {"sdkKey", "apiURL", "variable", "default"}; the SDK gets its config from
// {apiURL}/v1/sdkConfig with event logging and the config cache off, plus `options`; then
// {"ev":"ready"} and a {"ev":"value"} on every change of the variable, until stdin ends.
export async function runClientSDK(initializeDevCycle, options = {}) {
    const opts = JSON.parse(process.argv[2])
    const client = initializeDevCycle(opts.sdkKey, { user_id: 'e2e-user' }, {
        apiProxyURL: opts.apiURL,
        disableAutomaticEventLogging: true,
        disableCustomEventLogging: true,
        disableConfigCache: true,
        logger,
        logLevel: 'debug',
        ...options,
    })
    exitWithParent(() => client.close())
    await client.onClientInitialized()
    emit('ready')
    watchValue(() => client.variableValue(opts.variable, opts.default))
}
