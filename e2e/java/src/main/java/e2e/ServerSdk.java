package e2e;

import com.devcycle.sdk.server.common.logging.IDevCycleLogger;
import com.devcycle.sdk.server.common.model.DevCycleUser;
import com.devcycle.sdk.server.local.api.DevCycleLocalClient;
import com.devcycle.sdk.server.local.model.DevCycleLocalOptions;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.InputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.Instant;
import java.util.Objects;

/**
 * Runs DevCycle's Java server SDK (com.devcycle:java-server-sdk, local bucketing) for
 * e2e/java_test.go. args[0] is JSON: {"sdkKey", "cdnURL", "variable", "default", "pollMS"}. The
 * config, and its sse {hostname, path}, comes from the CDN stand-in; the SDK opens the stream
 * itself. Prints one JSON object per stdout line, like the node scripts (e2e/node/emit.mjs):
 * {"ev":"ready"}, {"ev":"value"} whenever the variable's value changes, and the SDK's own log as
 * {"ev":"log","level","msg"}. Exits when its stdin ends.
 */
public final class ServerSdk {
    private static final ObjectMapper JSON = new ObjectMapper();

    private ServerSdk() {}

    /** emit prints one line {"ev": ev, "t": epoch ms (sub-ms precision), ...fields}. */
    static synchronized void emit(String ev, Object... fields) {
        Instant now = Instant.now();
        ObjectNode line = JSON.createObjectNode();
        line.put("ev", ev);
        line.put("t", now.getEpochSecond() * 1000.0 + now.getNano() / 1e6);
        for (int i = 0; i + 1 < fields.length; i += 2) {
            line.putPOJO((String) fields[i], fields[i + 1]);
        }
        System.out.println(line);
        System.out.flush();
    }

    /** The SDK's log (DevCycleLogger) as {"ev":"log"} lines. */
    static final class Log implements IDevCycleLogger {
        @Override public void debug(String message) { emit("log", "level", "debug", "msg", message); }
        @Override public void info(String message) { emit("log", "level", "info", "msg", message); }
        @Override public void warning(String message) { emit("log", "level", "warn", "msg", message); }
        @Override public void error(String message) { emit("log", "level", "error", "msg", message); }
        @Override public void error(String message, Throwable t) {
            StringWriter trace = new StringWriter();
            t.printStackTrace(new PrintWriter(trace));
            emit("log", "level", "error", "msg", message + "\n" + trace);
        }
    }

    public static void main(String[] args) throws Exception {
        JsonNode opts = JSON.readTree(args[0]);
        String variable = opts.get("variable").asText();
        String fallback = opts.get("default").asText();
        DevCycleLocalOptions options = DevCycleLocalOptions.builder()
                .configCdnBaseUrl(opts.get("cdnURL").asText())
                .eventsApiBaseUrl(opts.get("cdnURL").asText())
                .configPollingIntervalMS(opts.get("pollMS").asInt())
                .disableAutomaticEventLogging(true)
                .disableCustomEventLogging(true)
                .customLogger(new Log())
                .build();
        DevCycleLocalClient client = new DevCycleLocalClient(opts.get("sdkKey").asText(), options);

        // The test closes our stdin to stop us.
        Thread stdin = new Thread(() -> {
            try (InputStream in = System.in) {
                while (in.read() >= 0) {
                    // discard
                }
            } catch (Exception ignored) {
                // stdin gone: exit as well
            }
            client.close();
            System.exit(0);
        });
        stdin.setDaemon(true);
        stdin.start();

        while (!client.isInitialized()) {
            Thread.sleep(1);
        }
        emit("ready");
        // Read the variable every millisecond; report each change, so the test sees the moment
        // a new config takes effect.
        DevCycleUser user = DevCycleUser.builder().userId("e2e-user").build();
        String last = null;
        while (true) {
            String value;
            try {
                value = client.variableValue(user, variable, fallback);
            } catch (RuntimeException e) {
                value = "error: " + e;
            }
            if (!Objects.equals(value, last)) {
                last = value;
                emit("value", "value", value);
            }
            Thread.sleep(1);
        }
    }
}
