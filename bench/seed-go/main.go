// The seed: the Knative docs sample websockets-go (Go + Gorilla WebSocket),
// reproduced from its documentation (/work/shared/seed in the project's
// workspace) as a benchmark peer. Like the sample it serves /ws, upgrades,
// logs every event (open, message with its content, error, close) with the
// peer's address through the standard logger (stderr), and echoes each
// message with its type, one goroutine a connection.
//
// Three additions for the benchmark harness: the address comes from HOST and
// PORT (the sample listens on :8080); /readyz answers 200 so bench/run.py
// can time start to ready the same way for every server; and
// SEED_LOG_MESSAGES=false drops the one log line a message (open, close and
// error are still logged), the seed's "quiet" mode beside our
// WS_LOG_MESSAGES=false.
//
// Build offline from Debian's packages (bench/run.py does this):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o seed-go main.go
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

// The sample's upgrader: Gorilla's default buffers, any origin.
var upgrader = websocket.Upgrader{
	CheckOrigin: func(r *http.Request) bool { return true },
}

// The sample's pkg/handlers: one callback a WebSocket event.

func onOpen(conn *websocket.Conn) {
	log.Printf("WebSocket connection opened: %v", conn.RemoteAddr())
}

// logMessages: SEED_LOG_MESSAGES=false turns the message log line off.
var logMessages = os.Getenv("SEED_LOG_MESSAGES") != "false"

func onMessage(conn *websocket.Conn, messageType int, message []byte) {
	if logMessages {
		log.Printf("Received message from %v: %s", conn.RemoteAddr(), string(message))
	}
	if err := conn.WriteMessage(messageType, message); err != nil {
		log.Printf("Error sending message: %v", err)
	}
}

func onClose(conn *websocket.Conn) {
	log.Printf("WebSocket connection closed: %v", conn.RemoteAddr())
	conn.Close()
}

func onError(conn *websocket.Conn, err error) {
	log.Printf("WebSocket error from %v: %v", conn.RemoteAddr(), err)
}

func handleWebSocket(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		log.Printf("Error upgrading to websocket: %v", err)
		return
	}
	onOpen(conn)
	go func() {
		defer onClose(conn)
		for {
			messageType, message, err := conn.ReadMessage()
			if err != nil {
				onError(conn, err)
				break
			}
			onMessage(conn, messageType, message)
		}
	}()
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	addr := os.Getenv("HOST") + ":" + port
	http.HandleFunc("/ws", handleWebSocket)
	http.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	fmt.Printf("Starting server on %s...\n", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		log.Fatalf("Server error: %v", err)
	}
}
