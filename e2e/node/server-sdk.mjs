// Runs @devcycle/nodejs-server-sdk for e2e/sdk_test.go. argv[2] is JSON:
// {"sdkKey", "cdnURL", "variable", "default", "pollMS"}. The config (and its sse {hostname,
// path}) comes from the CDN stand-in. pollMS (default 60 s) is configPollingIntervalMS, which
// the SDK uses only while it has no stream; with its stream open it polls every 10 min
// (sseConfigPollingIntervalMS), so only an SSE message can explain a faster update.
// Prints {"ev":"ready"}, then {"ev":"value"} on every change of the variable, and the SDK's
// own debug log as {"ev":"log"} (it logs "SSE connection opened" and "SSE message: <data>").
import { initializeDevCycle } from '@devcycle/nodejs-server-sdk'
import { emit, logger, watchValue, exitWithParent } from './emit.mjs'

const opts = JSON.parse(process.argv[2])
const client = initializeDevCycle(opts.sdkKey, {
    configCDNURI: opts.cdnURL,
    eventsAPIURI: opts.cdnURL,
    configPollingIntervalMS: opts.pollMS ?? 60000,
    // While SSE is connected the SDK polls at sseConfigPollingIntervalMS; values <= 60 s are
    // reset to 10 min by the SDK, so the default (10 min) is kept.
    disableAutomaticEventLogging: true,
    disableCustomEventLogging: true,
    logger,
    logLevel: 'debug',
})
exitWithParent(() => client.close())
await client.onClientInitialized()
emit('ready')
const user = { user_id: 'e2e-user' }
watchValue(() => client.variableValue(user, opts.variable, opts.default))
