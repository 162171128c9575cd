// Audio worklet for the review pages' recorder: hands each block of microphone samples
// (first channel, as floats) to the page, which keeps them until the reviewer stops.
class PrCapture extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0] && input[0].length) {
      this.port.postMessage(input[0].slice(0));
    }
    return true;
  }
}
registerProcessor('pr-capture', PrCapture);
