// Runs @devcycle/js-client-sdk under Node with the transport @devcycle/react-native-client-sdk
// gives it, for e2e/rn_test.go: the React Native SDK 2.22.8 depends on js-client-sdk 1.47.8
// exactly (installed here as @devcycle/js-client-sdk-rn) and passes it an `sseConnectionClass`
// that opens a react-native-sse EventSource (on the global XMLHttpRequest) with
// {timeoutBeforeConnection: 0, timeout: 0, withCredentials: true}, forwards every 'message'
// event's data to the SDK and reports open/close. RNConnection below does the same through the
// same contract (constructor(url, onMessage, logger), updateURL, isConnected, reopen, close);
// React Native's XMLHttpRequest is stood in for by ./rn-xhr.mjs.
// argv[2] is JSON: {"sdkKey", "apiURL", "variable", "default"}.
// Prints what client-sdk.mjs prints ({"ev":"ready"}, {"ev":"value"}, {"ev":"sse-connect"},
// {"ev":"sse","data","lastEventId"}, {"ev":"log"}) plus {"ev":"xhr-send","url","lastEventIdSent"}
// for every request the EventSource makes, {"ev":"sse-open"}, {"ev":"sse-error"} and
// {"ev":"sse-close"}.
import rnsse from 'react-native-sse'
import { initializeDevCycle } from '@devcycle/js-client-sdk-rn'
import { XMLHttpRequest } from './rn-xhr.mjs'
import { emit, runClientSDK } from './emit.mjs'

// react-native-sse's index.js require()s its ES module source; Metro (and Node) hand back the
// module namespace, whose default export is the EventSource class.
const EventSource = rnsse.default ?? rnsse

globalThis.XMLHttpRequest = XMLHttpRequest
XMLHttpRequest.onSend = (url, headers) => {
    if (url.includes('/event-stream')) {
        emit('xhr-send', { url, lastEventIdSent: headers['Last-Event-ID'] ?? null })
    }
}

class RNConnection {
    constructor(url, onMessage, logger) {
        this.url = url
        this.onMessage = onMessage
        this.logger = logger
        this.open = false
        this.connect()
    }

    connect() {
        emit('sse-connect', { url: this.url, withCredentials: true })
        const es = new EventSource(this.url, { debug: false, timeoutBeforeConnection: 0, timeout: 0, withCredentials: true })
        es.addEventListener('open', () => {
            this.open = true
            emit('sse-open')
        })
        es.addEventListener('message', (e) => {
            emit('sse', { data: e.data, lastEventId: e.lastEventId })
            this.onMessage(e.data)
        })
        es.addEventListener('error', (e) => {
            emit('sse-error', { message: e?.message?.slice?.(0, 200), status: e?.xhrStatus })
        })
        es.addEventListener('close', () => {
            this.open = false
            emit('sse-close')
        })
        this.es = es
    }

    updateURL(url) {
        this.close()
        this.url = url
        this.connect()
    }

    isConnected() {
        return this.open
    }

    reopen() {
        if (!this.open) {
            this.close()
            this.connect()
        }
    }

    close() {
        this.es?.close()
    }
}

// The React Native SDK expects the app to set global.DeviceInfo (react-native-device-info);
// js-client-sdk refuses reactNative: true without it and reads only getModel().
globalThis.DeviceInfo = { getModel: () => 'sse-gateway e2e (node)' }

await runClientSDK(initializeDevCycle, { sseConnectionClass: RNConnection, sdkPlatform: 'react-native', reactNative: true })
