package workerproc

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// testEnv marks the test binary, re-executed by Start, as an echo worker.
const testEnv = "WORKERPROC_TEST_WORKER"

type config struct {
	Greeting string `json:"greeting"`
}

type command struct {
	Cmd string `json:"cmd"`
}

// TestMain runs the echo worker when Start re-executed the test binary: it answers every
// command with its config's greeting and the command.
func TestMain(m *testing.M) {
	if os.Getenv(testEnv) == "" {
		os.Exit(m.Run())
	}
	var cfg config
	in, err := ReadConfig(os.Stdin, 1<<20, &cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for c := range Commands[command](context.Background(), in) {
		fmt.Printf("%s %s\n", cfg.Greeting, c.Cmd)
	}
	os.Exit(0)
}

func TestStartSendWait(t *testing.T) {
	p, err := Start(testEnv, 3, config{Greeting: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewScanner(p.Out)
	for _, cmd := range []string{"one", "two"} {
		if err := p.Send(command{Cmd: cmd}); err != nil {
			t.Fatal(err)
		}
		if !out.Scan() || out.Text() != "hello "+cmd {
			t.Fatalf("worker answered %q (%v), want %q", out.Text(), out.Err(), "hello "+cmd)
		}
	}
	p.CloseInput()
	if p.Wait(10 * time.Second) {
		t.Fatal("a worker whose input ended had to be killed")
	}
	if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("worker exited %d", code)
	}
	if p.Index != 3 {
		t.Fatalf("Index %d, want 3", p.Index)
	}
}

func TestWaitKills(t *testing.T) {
	p, err := Start(testEnv, 0, config{})
	if err != nil {
		t.Fatal(err)
	}
	// Its input still open, the worker waits for commands: Wait must kill it.
	if !p.Wait(100 * time.Millisecond) {
		t.Fatal("Wait did not kill a worker that kept running")
	}
	p.CloseInput()
}

func TestReadConfig(t *testing.T) {
	var cfg config
	in, err := ReadConfig(strings.NewReader(`{"greeting":"hi"}`+"\n"+`{"cmd":"a"}`+"\nnot json\n"+`{"cmd":"b"}`+"\n"), 1<<20, &cfg)
	if err != nil || cfg.Greeting != "hi" {
		t.Fatalf("config %+v, %v", cfg, err)
	}
	var got []string
	for c := range Commands[command](context.Background(), in) {
		got = append(got, c.Cmd)
	}
	if strings.Join(got, ",") != "a,b" {
		t.Fatalf("commands %q, want a and b (the line that is not JSON skipped)", got)
	}
	for _, bad := range []string{"", "{\n"} {
		if _, err := ReadConfig(strings.NewReader(bad), 1<<20, &cfg); err == nil {
			t.Errorf("ReadConfig(%q): no error", bad)
		}
	}
}
