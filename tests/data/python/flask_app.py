"""The Flask application of tests/python_wsgi.rs: forms, uploads, JSON, a
streamed response, send_file, redirects, cookies and the session."""
import os

from flask import Flask, Response, jsonify, redirect, request, send_file, session, stream_with_context

app = Flask(__name__)
app.secret_key = "test only"
HERE = os.path.dirname(os.path.abspath(__file__))


@app.route("/")
def index():
    return "Hello from Flask"


@app.route("/form", methods=["POST"])
def form():
    return f"name={request.form['name']}"


@app.route("/upload", methods=["POST"])
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), last=data[-1])


@app.route("/json", methods=["POST"])
def json_echo():
    return jsonify(got=request.get_json(), scheme=request.scheme, remote=request.remote_addr)


@app.route("/stream")
def stream():
    def gen():
        for i in range(5):
            yield f"line {i}\n"

    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.route("/file")
def file():
    return send_file(os.path.join(HERE, "flask_app.py"), mimetype="text/plain")


@app.route("/go")
def go():
    return redirect("/")


@app.route("/login", methods=["POST"])
def login():
    session["user"] = request.form["user"]
    return "logged in"


@app.route("/me")
def me():
    return session.get("user", "nobody")


@app.route("/pid")
def pid():
    return str(os.getpid())
