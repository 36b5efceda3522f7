// Legacy PC platform devices on the port-I/O bus: the 16550A UART, the 8042 keyboard
// controller (reset line only) and the MC146818 CMOS RTC.

export type { I8042Counters, I8042Options } from "./i8042.js";
export { I8042, I8042_COMMAND_PORT, I8042_DATA_PORT } from "./i8042.js";
export type { RtcCounters, RtcOptions, RtcState } from "./rtc.js";
export { RTC_DATA_PORT, RTC_INDEX_PORT, RTC_PORT_COUNT, Rtc } from "./rtc.js";
export type { SerialCounters, SerialIrqMode, SerialOptions, SerialState } from "./serial.js";
export { COM_PORTS, COM1_IRQ, COM2_IRQ, Serial, UART_REGISTER_COUNT } from "./serial.js";
