// Runs @devcycle/js-client-sdk under Node for e2e/sdk_test.go, with the `eventsource` package as
// the global EventSource the SDK opens (new EventSource(url, {withCredentials: true})).
// argv[2] is JSON: {"sdkKey", "apiURL", "variable", "default"}. The SDK fetches its config from
// {apiURL}/v1/sdkConfig; that config's sse.url points at the gateway.
// Prints {"ev":"ready"}, {"ev":"value"} on every change of the variable, {"ev":"sse-open"}
// and {"ev":"sse","data","lastEventId"} for what the SDK's EventSource receives, and the SDK's
// log as {"ev":"log"}.
import EventSource from 'eventsource'
import { initializeDevCycle } from '@devcycle/js-client-sdk'
import { emit, runClientSDK } from './emit.mjs'

// A transparent subclass: the SDK sets onopen/onmessage/onerror on it as on any EventSource;
// the setters only report what arrived before handing it to the SDK's handler. (eventsource@2's
// own setters drop every other listener of that type, so addEventListener would not do.)
globalThis.EventSource = class TappedEventSource extends EventSource {
    constructor(url, init) {
        super(url, init)
        emit('sse-connect', { url, withCredentials: !!init?.withCredentials })
    }
    set onopen(fn) {
        super.onopen = (e) => { emit('sse-open'); return fn(e) }
    }
    set onmessage(fn) {
        super.onmessage = (e) => { emit('sse', { data: e.data, lastEventId: e.lastEventId }); return fn(e) }
    }
    set onerror(fn) {
        super.onerror = (e) => { emit('sse-error', { status: e?.status, message: e?.message }); return fn(e) }
    }
}

await runClientSDK(initializeDevCycle)
