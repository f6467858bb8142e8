// The XMLHttpRequest that react-native-sse finds in React Native, for Node: the npm package
// `xmlhttprequest` (which, unlike the other XHRs for Node, hands out the response as it
// arrives: responseText grows and readystatechange fires with LOADING on every chunk), with
// the two things in which React Native's own XHR (Libraries/Network/XMLHttpRequest.js)
// differs from it and which react-native-sse depends on:
//   - the readyState constants are static (react-native-sse reads XMLHttpRequest.DONE and
//     XMLHttpRequest.LOADING); `xmlhttprequest` has them on instances only;
//   - when the body fails after the response headers arrived (a stream that ends without its
//     last chunk, a reset), React Native's XHR goes to DONE with the response's status kept
//     (__didCompleteResponse stores the error text and never clears `status`); `xmlhttprequest`
//     sets status 0 as browsers do. react-native-sse reconnects only on DONE with a 2xx/3xx
//     status, so this decides whether an app reconnects after the gateway closes its stream.
// onSend, when set, is told each request's URL and headers (what went on the wire).
import xhr from 'xmlhttprequest'

export class XMLHttpRequest extends xhr.XMLHttpRequest {
    static UNSENT = 0
    static OPENED = 1
    static HEADERS_RECEIVED = 2
    static LOADING = 3
    static DONE = 4
    static onSend = null

    constructor() {
        super()
        let status = null
        let aborting = false
        let url = ''
        const headers = {}
        const { abort, open, setRequestHeader, send } = this
        Object.defineProperty(this, 'status', {
            get: () => status,
            set: (v) => {
                // An error after the headers keeps the response's status, as in React Native;
                // abort() and errors before any response still read 0.
                if (v === 0 && !aborting && this.readyState >= XMLHttpRequest.HEADERS_RECEIVED) return
                status = v
            },
        })
        this.abort = (...a) => {
            aborting = true
            try {
                return abort.apply(this, a)
            } finally {
                aborting = false
            }
        }
        this.open = (method, u, ...rest) => {
            url = String(u)
            return open.call(this, method, u, ...rest)
        }
        this.setRequestHeader = (name, value) => {
            headers[name] = String(value)
            return setRequestHeader.call(this, name, value)
        }
        this.send = (...a) => {
            XMLHttpRequest.onSend?.(url, { ...headers })
            return send.apply(this, a)
        }
    }
}
