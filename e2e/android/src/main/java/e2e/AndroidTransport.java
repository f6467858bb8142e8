package e2e;

import com.launchdarkly.eventsource.ConnectStrategy;
import com.launchdarkly.eventsource.ErrorStrategy;
import com.launchdarkly.eventsource.EventSource;
import com.launchdarkly.eventsource.MessageEvent;
import com.launchdarkly.eventsource.background.BackgroundEventHandler;
import com.launchdarkly.eventsource.background.BackgroundEventSource;

import java.net.URI;
import java.util.concurrent.TimeUnit;

/**
 * Opens the stream the way the DevCycle Android SDK 2.7.3 does (DevCycleClient.initEventSource):
 * a BackgroundEventSource over
 * {@code EventSource.Builder(ConnectStrategy.http(URI(sse.url)).readTimeout(5, MINUTES))
 * .errorStrategy(ErrorStrategy.alwaysContinue())}, and prints what its handler is told as one
 * JSON object per line for the Go test: {"ev":"open"}, {"ev":"message","event","id","data"},
 * {"ev":"closed","lastEventId","baseRetryMs"}, {"ev":"error","error"}; "t" is the wall clock in
 * ms. args[0] is the stream URL. It ends when its standard input does.
 */
public final class AndroidTransport {
    private AndroidTransport() {}

    public static void main(String[] args) throws Exception {
        final BackgroundEventSource[] source = new BackgroundEventSource[1];
        BackgroundEventHandler handler = new BackgroundEventHandler() {
            @Override
            public void onOpen() {
                emit("open");
            }

            @Override
            public void onClosed() {
                EventSource es = source[0].getEventSource();
                emit("closed", "lastEventId", es.getLastEventId(), "baseRetryMs", es.getBaseRetryDelayMillis());
            }

            @Override
            public void onMessage(String event, MessageEvent m) {
                emit("message", "event", event, "id", m.getLastEventId(), "data", m.getData());
            }

            @Override
            public void onComment(String comment) {
            }

            @Override
            public void onError(Throwable t) {
                emit("error", "error", String.valueOf(t));
            }
        };
        EventSource.Builder builder = new EventSource.Builder(
                ConnectStrategy.http(URI.create(args[0])).readTimeout(5, TimeUnit.MINUTES))
                .errorStrategy(ErrorStrategy.alwaysContinue());
        source[0] = new BackgroundEventSource.Builder(handler, builder).build();
        source[0].start();
        while (System.in.read() != -1) {
            // the Go test closes our stdin to stop us
        }
        source[0].close();
        System.exit(0);
    }

    /** emit prints {"ev":ev,"t":now,k1:v1,...}; values are strings, numbers or null. */
    private static synchronized void emit(String ev, Object... kv) {
        StringBuilder b = new StringBuilder("{\"ev\":");
        quote(b, ev);
        b.append(",\"t\":").append(System.currentTimeMillis());
        for (int i = 0; i + 1 < kv.length; i += 2) {
            b.append(',');
            quote(b, (String) kv[i]);
            b.append(':');
            Object v = kv[i + 1];
            if (v == null) {
                b.append("null");
            } else if (v instanceof Number) {
                b.append(v);
            } else {
                quote(b, v.toString());
            }
        }
        System.out.println(b.append('}'));
        System.out.flush();
    }

    private static void quote(StringBuilder b, String s) {
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        b.append('"');
    }
}
